from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from sealtune_trainer.contract import TrainerConfig

pytestmark = pytest.mark.trainer

DIGEST = "sha256:" + "a" * 64
MINIMAL = {
    "data": {"path": "/data", "format": "chat", "manifestDigest": DIGEST},
    "model": {"path": "/model", "manifestDigest": DIGEST},
    "method": {"type": "lora"},
    "output": {"dir": "/out"},
}


def _with(**changes: object) -> dict[str, object]:
    return {**MINIMAL, **changes}


def test_wire_form_is_camel_case_and_round_trips() -> None:
    config = TrainerConfig.model_validate(_with(training={"maxSteps": 5, "batchSize": 2}))
    wire = config.to_json()
    assert '"maxSteps":5' in wire and "max_steps" not in wire
    assert TrainerConfig.model_validate_json(wire) == config
    assert config.output.termination_message_path == "/dev/termination-log"


def test_python_names_are_accepted_too() -> None:
    config = TrainerConfig.model_validate(_with(training={"max_steps": 3}))
    assert config.training.max_steps == 3


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"unknown": 1}, "unknown"),
        ({"data": {**MINIMAL["data"], "manifestDigest": "md5:00"}}, "manifestDigest"),
        ({"data": {**MINIMAL["data"], "encrypted": True}}, "keyFile is required"),
        ({"training": {"epochs": 1, "maxSteps": 2}}, "cannot both be set"),
        ({"deepspeed": {"zeroStage": 2}, "privacy": {"dp": {"targetEpsilon": 8}}},
         "cannot be combined with deepspeed"),
        ({"training": {"checkpointEvery": 5}}, "checkpointDir is required"),
        # Checkpoints are never written in clear, so nothing unauthenticated is loaded.
        ({"training": {"checkpointEvery": 5}, "output": {"dir": "/out", "checkpointDir": "/c"}},
         "checkpointKeyFile is required"),
        ({"model": {"path": "/model"}}, "model.manifestDigest"),
        ({"model": {"path": "/model", "manifestDigest": "sha256:abc"}}, "manifestDigest"),
        ({"model": {**MINIMAL["model"], "tokenizerPath": "/elsewhere"}}, "tokenizerPath"),
        ({"privacy": {"canaries": {"format": "no placeholder"}}}, "placeholder"),
        ({"method": {"type": "qlora", "bits": 3}}, "bits"),
        ({"deepspeed": {"zeroStage": 1}}, "zeroStage"),
    ],
)
def test_invalid_configs_are_refused(changes: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError) as caught:
        TrainerConfig.model_validate(_with(**changes))
    assert fragment in str(caught.value)


def test_method_is_selected_by_type() -> None:
    qlora = TrainerConfig.model_validate(_with(method={"type": "qlora", "r": 4}))
    assert qlora.method.type == "qlora" and qlora.method.bits == 4
    assert TrainerConfig.model_validate(_with(method={"type": "full"})).method.type == "full"


def test_contract_imports_nothing_heavy() -> None:
    probe = ("import sys, sealtune_trainer.contract, sealtune_trainer.inputs, "
             "sealtune_trainer.dataset; "
             "heavy = {'torch', 'transformers', 'peft', 'deepspeed', 'opacus'} & "
             "set(sys.modules); assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", probe], check=True)
