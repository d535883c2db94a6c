"""The fine-tuning job process: `python -m slipway.train.worker --job-dir DIR`.

Reads DIR/job.json, trains, and leaves its outcome in DIR (layout in `slipway.train.job`):

    exit 0    DIR/result.json (adapter path, metrics, trained tokens); also when it was there already
    exit 1    DIR/error.json, OpenAI's job error {"code", "message", "param"}: a bad spec, an unknown
              base model or a bad dataset fail here before any model is loaded
    exit 75   stopped by SIGTERM or SIGINT after saving a checkpoint; starting it again resumes

Progress goes to DIR/events.jsonl. Started again on a folder with checkpoints, whether the last
process was stopped, killed or crashed, it resumes from the newest checkpoint by itself, so
whoever runs jobs only has to start the same command again. Logs (JSON lines) go to stderr.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import traceback
from pathlib import Path

from slipway.observe.logging import configure_logging
from slipway.train.job import EventLog, JobDir, JobError, preflight, write_json_atomic

EXIT_OK = 0
EXIT_FAILED = 1
# EX_TEMPFAIL: "try again later", which is what a resumable stop means.
EXIT_STOPPED = 75

log = logging.getLogger("slipway.train.worker")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m slipway.train.worker",
                                     description="Run (or resume) one fine-tuning job from its folder.")
    parser.add_argument("--job-dir", type=Path, required=True, help="Folder holding job.json.")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    return run_job(JobDir(args.job_dir.resolve()), stop=_stop_on_signals())


def run_job(job_dir: JobDir, *, stop: threading.Event | None = None) -> int:
    """Run the job in `job_dir` to its end, or until `stop` is set; returns the process exit code."""
    if job_dir.result_path.is_file():
        log.info("job already succeeded; nothing to do", extra={"job_dir": str(job_dir.root)})
        return EXIT_OK
    if not job_dir.root.is_dir():
        print(f"job folder {job_dir.root} does not exist; create it and write job.json into it", file=sys.stderr)
        return EXIT_FAILED
    job_dir.error_path.unlink(missing_ok=True)
    events = EventLog(job_dir.events_path)
    stop = stop or threading.Event()
    try:
        spec = job_dir.read_spec()
        preflight(spec, job_dir)
        # Loaded only now: a job that fails its checks above never pays for importing torch.
        from slipway.train.lora import train_lora_sft

        outcome = train_lora_sft(spec, job_dir, emit=events.append, should_stop=stop.is_set)
    except JobError as exc:
        return _fail(job_dir, events, exc.as_openai())
    except Exception as exc:
        log.error("fine-tuning job crashed", exc_info=True)
        return _fail(job_dir, events, {"code": "internal_error", "param": None,
                                       "message": f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}"})
    if outcome.stopped:
        events.append(f"Stopped after step {outcome.step}/{outcome.total_steps}; start the job again to resume",
                      level="warn", data={"step": outcome.step, "total_steps": outcome.total_steps})
        return EXIT_STOPPED
    result = {"job_id": spec.job_id, "adapter_path": str(outcome.adapter_dir), "steps": outcome.step,
              "trained_tokens": outcome.trained_tokens, "metrics": outcome.metrics,
              "checkpoints": outcome.lineage.get("metrics", {}).get("checkpoints", [])}
    write_json_atomic(job_dir.result_path, result)
    events.append("The job has successfully completed", data={"step": outcome.step,
                                                                "total_steps": outcome.total_steps,
                                                                "trained_tokens": outcome.trained_tokens})
    return EXIT_OK


def _fail(job_dir: JobDir, events: EventLog, error: dict) -> int:
    write_json_atomic(job_dir.error_path, error)
    events.append(f"Fine-tuning failed: {error['message']}", level="error", data={"error": error})
    log.error("fine-tuning job failed", extra={"code": error["code"], "detail": error["message"]})
    return EXIT_FAILED


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT; the training loop checks it after every step."""
    stop = threading.Event()

    def handle(signum, _frame) -> None:
        log.info("stop requested; saving a checkpoint after the current step", extra={"signal": signum})
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    return stop


if __name__ == "__main__":
    sys.exit(main())
