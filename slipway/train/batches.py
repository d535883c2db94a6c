"""Batches of encoded chat rows and the loss on them: mean cross-entropy per assistant token.

Rows are right-padded; padding is masked out of attention and labelled -100 like every token that
is not trained. Position t's logits predict token t + 1, so labels are compared one step ahead.
"""

from __future__ import annotations

import torch

from slipway.train.chat_tokens import IGNORE_INDEX, EncodedRow


def collate(rows: list[EncodedRow], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Right-padded tensors; padding is masked out of attention and labelled -100."""
    width = max(len(r.input_ids) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row.input_ids)
        input_ids[i, :n] = torch.tensor(row.input_ids)
        labels[i, :n] = torch.tensor(row.labels)
        attention_mask[i, :n] = 1
    return {"input_ids": input_ids.to(device), "labels": labels.to(device),
            "attention_mask": attention_mask.to(device)}


def token_losses(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int, int]:
    """Summed cross-entropy over labelled tokens, correct next-token guesses, and the number labelled."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
    # Position t predicts token t + 1.
    shifted_logits = logits[:, :-1, :].float()
    targets = batch["labels"][:, 1:]
    mask = targets != IGNORE_INDEX
    total = torch.nn.functional.cross_entropy(shifted_logits.reshape(-1, shifted_logits.size(-1)),
                                              targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")
    correct = int(((shifted_logits.argmax(-1) == targets) & mask).sum())
    return total, correct, int(mask.sum())


def batch_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, float]:
    """Mean loss per trained token of the batch, and the share of those tokens guessed right."""
    total, correct, count = token_losses(model, batch)
    return total / max(count, 1), correct / max(count, 1)


@torch.no_grad()
def validation_loss(model: torch.nn.Module, rows: list[EncodedRow], batch_size: int, pad_id: int,
                    device: torch.device) -> float:
    """Mean loss per assistant token over the validation rows (no dropout, no random numbers drawn)."""
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = collate(rows[start:start + batch_size], pad_id, device)
        summed, _, n = token_losses(model, batch)
        total += summed.item()
        count += n
    model.train()
    return total / max(count, 1)
