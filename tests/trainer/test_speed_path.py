"""The pure logic of the trainer's fast path, on CPU: packed rows whose positions restart at
each example and whose attention does not cross examples, and a step's update that does not
depend on how its examples are split into micro-batches."""

from __future__ import annotations

import sys

import pytest
import torch

from sealtune_trainer import fast, schedule, steppers, tiny
from sealtune_trainer.contract import TrainerConfig
from sealtune_trainer.distributed import Topology
from sealtune_trainer.modeling import model_inputs, prepare
from sealtune_trainer.tokenization import IGNORE, Example, collate, pack, segments


def _examples() -> list[Example]:
    return [Example([5, 6, 7], [5, 6, 7]), Example([8, 9], [IGNORE, 9]),
            Example([10, 11, 12, 13], [10, 11, 12, 13])]


def test_packing_restarts_positions_at_each_example() -> None:
    rows = pack(_examples(), 4)
    assert [row.input_ids for row in rows] == [[5, 6, 7, 8], [9, 10, 11, 12]]
    assert [row.positions for row in rows] == [[0, 1, 2, 0], [1, 0, 1, 2]]
    assert [row.labels for row in rows] == [[IGNORE, 6, 7, IGNORE], [9, IGNORE, 11, 12]]
    assert segments([0, 1, 2, 0]) == [0, 0, 0, 1]
    assert segments([1, 0, 1, 2]) == [0, 1, 1, 1]


def test_collate_carries_position_ids_only_for_packed_rows() -> None:
    plain = collate(_examples()[:2], pad_id=0)
    assert "position_ids" not in plain
    assert model_inputs(plain).keys() == {"input_ids", "attention_mask"}
    short = pack(_examples()[:2], 16)  # one short row: padded, positions run on
    packed = collate([*short, Example([1, 2, 3, 4, 5, 6], [1] * 6)], pad_id=0)
    assert packed["position_ids"].tolist() == [[0, 1, 2, 0, 1, 2], [0, 1, 2, 3, 4, 5]]
    assert packed["labels"][0].tolist()[-1] == IGNORE
    assert model_inputs(packed).keys() == {"input_ids", "position_ids"}


@pytest.fixture(scope="module")
def llama() -> torch.nn.Module:
    torch.manual_seed(0)
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(tiny.llama_config(97, hidden=32, layers=2, heads=4, kv_heads=2,
                                               ffn=64, max_positions=64))
    return model.eval()


def test_packed_attention_does_not_cross_examples(llama: torch.nn.Module) -> None:
    first, second = [3, 14, 15, 92, 65], [35, 89, 79, 32]
    row = collate(pack([Example(first, first), Example(second, second)], 9), pad_id=0)
    with torch.no_grad():
        packed = llama(**model_inputs(row), use_cache=False).logits[0]
        alone = [llama(input_ids=torch.tensor([ids])).logits[0] for ids in (first, second)]
    torch.testing.assert_close(packed[:5], alone[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(packed[5:], alone[1], atol=1e-5, rtol=1e-4)
    # Without the position ids the second example would see the first. (A cache, which
    # use_cache=True makes, also turns the per-example attention off: the trainer passes
    # use_cache=False everywhere.)
    with torch.no_grad():
        crossing = llama(input_ids=row["input_ids"], use_cache=False).logits[0]
    assert not torch.allclose(crossing[5:], alone[1], atol=1e-3)


def _config() -> TrainerConfig:
    return TrainerConfig.model_validate({
        "data": {"path": "/unused", "format": "text", "manifestDigest": "sha256:" + "0" * 64},
        "model": {"path": "/unused", "manifestDigest": "sha256:" + "0" * 64},
        "method": {"type": "lora", "r": 4, "alpha": 8},
        "training": {"maxSteps": 1, "batchSize": 4, "maxSeqLength": 16,
                     "lrScheduler": "constant", "learningRate": 1e-2},
        "output": {"dir": "/unused"},
    })


def _one_step(micro: int) -> dict[str, torch.Tensor]:
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    base = LlamaForCausalLM(tiny.llama_config(97, hidden=32, layers=2, heads=4, kv_heads=2,
                                              ffn=64, max_positions=64))
    cpu = torch.device("cpu")
    model = prepare(base, _config(), cpu)
    stepper = steppers.TorchStepper(model, _config(), total_steps=1, topology=Topology(),
                                    device=cpu, dtype=torch.float32)
    generator = torch.Generator().manual_seed(3)
    items = [Example(ids, ids) for ids in
             (torch.randint(3, 97, (n,), generator=generator).tolist() for n in (16, 9, 12, 5))]
    groups = schedule.chunks(list(range(4)), 0, 1, micro)
    stepper.step([collate([items[i] for i in g], 0) for g in groups])
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_the_update_does_not_depend_on_the_micro_batch_split() -> None:
    whole, split = _one_step(4), _one_step(1)
    for name, value in whole.items():
        torch.testing.assert_close(split[name], value, atol=1e-6, rtol=1e-5)


def test_the_cpu_path_needs_no_liger_kernel() -> None:
    cpu = torch.device("cpu")
    assert not fast.kernels_available(cpu)
    assert fast.speed_up(object(), cpu, kernels=True, compile_decoder=True) == {
        "fusedLoss": False, "fusedKernels": False, "compiledLayers": 0}
    assert fast.fit_micro_batch(torch.nn.Identity(), object(), want=5, seq_len=8, device=cpu,
                                dtype=torch.float32) == 5
    assert "liger_kernel" not in sys.modules
    assert schedule.chunks(list(range(5)), 0, 1, 2) == [[0, 1], [2, 3], [4]]
