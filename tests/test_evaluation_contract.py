"""Contract of the gate's Azure ML calls: the real azure-ai-ml SDK, HTTP answered by testing.aml_service.

* the command job gets the champion as an `mlflow_model` input (`azureml:<name>:<version>`) and
  `--champion-model ${{inputs.champion}}`; AutoML gets none (it runs no script of ours);
* an evaluation job is one PUT of a Command job running evaluate.py, each model an `mlflow_model` input in the
  path forms Azure ML documents (registered `azureml:<name>:<version>`, job output
  `azureml://jobs/<job>/outputs/<output>`: Azure/azureml-examples cli/jobs/basics/hello-model-as-output.yml);
  `mlflow_model` is a JobInputType of the REST spec (Microsoft.MachineLearningServices 2025-12-01,
  MLFlowModelJobInput); a repeated name answers with the existing job.
"""

from __future__ import annotations

import dataclasses

import pytest
from aml_harness import azure_platform

from shared.core.errors import PermanentError
from shared.core.platform import EvaluationRequest, TrainingRequest
from testing.aml_service import AmlService

REQ = TrainingRequest(job_name="train-3f9a1c2b7d4e", experiment_name="reflex", data_name="sales",
                      data_version="7", mode="command", task="classification", label_column="churned",
                      compute="cpu-cluster", environment="azureml:reflex-train:3", champion_model="churn:4")
EVAL = EvaluationRequest(job_name="reflex-eval-0123456789abcdef01234567", experiment_name="reflex",
                         data_name="sales", data_version="7", task="classification", label_column="churned",
                         compute="cpu-cluster", environment="azureml:reflex-train:3",
                         models={"challenger": "azureml://jobs/train-3f9a1c2b7d4e/outputs/best_model",
                                 "champion": "azureml:churn:4"},
                         tags={"reflex.kind": "evaluation", "reflex.parent": "train-3f9a1c2b7d4e"},
                         code="azureml:reflex-train-code:2")


@pytest.fixture
def svc() -> AmlService:
    return AmlService()


def test_the_command_job_mounts_the_champion_it_scores(svc: AmlService) -> None:
    with azure_platform(svc) as p:
        p.submit_training(REQ)
    [(method, path)] = svc.calls()
    assert (method, path) == ("PUT", f"/jobs/{REQ.job_name}")
    props = svc.requests[-1].body["properties"]
    assert props["inputs"]["champion"] == {"jobInputType": "mlflow_model",
                                           "uri": svc.ws_path + "/models/churn/versions/4"}
    assert props["command"].endswith("--champion-model ${{inputs.champion}}")


def test_without_a_champion_the_command_is_unchanged(svc: AmlService) -> None:
    with azure_platform(svc) as p:
        p.submit_training(dataclasses.replace(REQ, champion_model=""))
    props = svc.requests[-1].body["properties"]
    assert "champion" not in props["inputs"] and "--champion-model" not in props["command"]


def test_an_evaluation_job_is_one_put_of_a_command_job_with_model_inputs(svc: AmlService) -> None:
    with azure_platform(svc) as p:
        job = p.submit_evaluation(EVAL)
        again = p.submit_evaluation(EVAL)  # a redelivered run event: the existing job, found by name
    assert svc.calls()[0] == ("PUT", f"/jobs/{EVAL.job_name}")
    props = svc.requests[0].body["properties"]
    assert props["jobType"] == "Command" and props["experimentName"] == "reflex"
    assert props["inputs"]["data"]["jobInputType"] == "uri_folder"
    assert props["inputs"]["challenger"]["jobInputType"] == "mlflow_model"
    assert props["inputs"]["challenger"]["uri"] == "azureml://jobs/train-3f9a1c2b7d4e/outputs/best_model"
    assert props["inputs"]["champion"] == {"jobInputType": "mlflow_model",
                                           "uri": svc.ws_path + "/models/churn/versions/4"}
    assert props["command"] == ("python evaluate.py --data ${{inputs.data}} --label churned --task classification "
                                "--model challenger=${{inputs.challenger}} --model champion=${{inputs.champion}} "
                                "--holdout")
    assert props["codeId"].endswith("/codes/reflex-train-code/versions/2") and not props.get("outputs")
    assert props["tags"] == {"reflex.kind": "evaluation", "reflex.parent": "train-3f9a1c2b7d4e",
                             "reflex.managed": "true"}
    assert job.name == again.name == EVAL.job_name and job.kind == "command"


def test_an_evaluation_refuses_what_could_never_be_found_again(svc: AmlService) -> None:
    with azure_platform(svc) as p:
        with pytest.raises(PermanentError, match="lower-case"):
            p.submit_evaluation(dataclasses.replace(EVAL, job_name="Reflex-Eval"))
        with pytest.raises(PermanentError, match="pinned"):
            p.submit_evaluation(dataclasses.replace(EVAL, environment="azureml:reflex-train@latest"))
    assert svc.calls() == []
