"""`python -m sealtune_trainer --config FILE` (also the `sealtune-trainer` script).

Order matters: the contract is validated, the data set verified (and decrypted, in memory),
the base model verified file by file and the output directory found absent before torch and
friends are imported, so a bad config, a digest mismatch or a leftover fails in seconds,
trains nothing and loads nothing. Exit codes: 0 trained (gate outcomes are in the result), 1
failed, 2 refused (config or platform), 3 data rejected, 4 base model rejected, 5 outputs
refused (already there, or a planted symlink). The result or the failure goes to the
termination-message path as JSON of at most 4 KB.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from sealtune_trainer import outputs
from sealtune_trainer.contract import DEFAULT_TERMINATION_MESSAGE_PATH, TrainerConfig
from sealtune_trainer.errors import EXIT_FAILED, TrainerError
from sealtune_trainer.inputs import load_config, load_data, verify_model
from sealtune_trainer.records import DataSet
from sealtune_trainer.telemetry import Metrics, configure_logging, log

# Nothing may be fetched from a model hub, and progress bars are noise in pod logs.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def _report(path: Path, result: dict[str, Any]) -> None:
    try:
        outputs.write_termination_message(path, result)
    except OSError as exc:
        log.warning("cannot write the termination message to %s: %s", path, exc.strerror)


def verify_before_import(config: TrainerConfig) -> DataSet:
    """What is checked before torch is imported: the data set (returned, verified), the base
    model, and that no output directory exists yet."""
    data = load_data(config)
    log.info("data verified: %d files, %d records, manifest %s", data.files,
             len(data.records), data.manifest_digest)
    log.info("base model verified: manifest %s", verify_model(config))
    outputs.check_absent(Path(config.output.dir))
    return data


def _train(config: TrainerConfig, metrics: Metrics) -> dict[str, Any]:
    metrics.phase.state("verifying")
    data = verify_before_import(config)
    # Only now the heavy imports (torch, transformers, deepspeed): seconds to tens of seconds.
    from sealtune_trainer.distributed import Topology
    from sealtune_trainer.run import Trainer

    return Trainer(config, data, metrics, Topology.from_env()).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sealtune-trainer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="trainer config (JSON)")
    args = parser.parse_args(argv)
    for name, value in OFFLINE_ENV.items():
        os.environ.setdefault(name, value)
    rank = int(os.environ.get("RANK", "0"))
    # One writer per pod: processes started by one torchrun share the container's
    # termination-message file and its metrics port.
    pod_leader = int(os.environ.get("LOCAL_RANK", "0")) == 0
    configure_logging(rank)
    termination = Path(DEFAULT_TERMINATION_MESSAGE_PATH)
    metrics = Metrics()
    try:
        config = load_config(args.config)
        termination = Path(config.output.termination_message_path)
        if pod_leader:
            metrics.serve(config.metrics_port)
        result = _train(config, metrics)
    except TrainerError as exc:
        metrics.phase.state("failed")
        log.error("%s: %s", exc.reason, exc.message)
        if pod_leader:
            _report(termination, {"ok": False, "reason": exc.reason, "message": exc.message})
        return exc.exit_code
    except Exception as exc:
        # Exception messages can quote data (a tokenizer error echoing its input), so only
        # the type and the stack are logged and reported.
        metrics.phase.state("failed")
        stack = "".join(traceback.format_tb(exc.__traceback__))
        log.error("unexpected %s; stack:\n%s", type(exc).__name__, stack)
        if pod_leader:
            _report(termination, {"ok": False, "reason": "TrainerFailed",
                                  "message": f"unexpected {type(exc).__name__}"})
        return EXIT_FAILED
    log.info("done: %d steps, gates %s", result["steps"],
             "passed" if result["gatesPassed"] else "FAILED")
    if pod_leader:
        _report(termination, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
