"""The batch and training service the reactions share (they may import each other only through it).

Pure rules: where a blob belongs and the Azure ML names of a batch (`paths`), accepted formats (`formats`), the
typed records of the batch side and their transitions (`record`), admission of training jobs (`admission`).
With I/O: batch intake and completion for the data and scoring containers (`intake`), training a batch,
retraining it and closing its job (`training`), freezing a batch's recorded versions into the copy its job reads
(`freeze`), the MLTable file AutoML needs (`mltable`), streaming row readers (`tabular`)."""
