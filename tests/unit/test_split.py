"""Model splitting: the three parts compose to exactly the unsplit model."""

import copy

import pytest
import torch
from torch import nn

from edgelam.models.adapters import build_llm4cp
from edgelam.models.backbones import BackboneConfig
from edgelam.models.llm4cp import LLM4CPConfig
from edgelam.training.split import (
    SplitModel,
    causal_lm_loss,
    register_splitter,
    split_model,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one thread is fastest, and spares a loaded machine oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_llm4cp(normalization="batch", dropout=0.0):
    cfg = LLM4CPConfig(history_slots=4, future_slots=2, num_subcarriers=8, patch_size=2,
                       res_dim=4, res_layers=1, dropout=dropout, normalization=normalization,
                       trainable="lora", lora_rank=2,
                       backbone=BackboneConfig(name="custom", num_layers=2, d_model=16,
                                               n_head=2, n_positions=8))  # fmt: skip
    return build_llm4cp(cfg, seed=0)[0]


def tiny_gpt2_lm():
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=40, n_positions=12, n_embd=16, n_layer=2, n_head=2,
                     bos_token_id=None, eos_token_id=None)  # fmt: skip
    torch.manual_seed(0)
    return GPT2LMHeadModel(cfg)


@pytest.mark.parametrize("normalization", ["batch", "sample"])
def test_llm4cp_split_equals_model(normalization):
    model = tiny_llm4cp(normalization).double().eval()
    parts = split_model(model)
    x = torch.randn(5, 4, 16, dtype=torch.float64)
    emb, context = parts.embedding(x)
    assert emb.shape == (5, 4, 16)
    torch.testing.assert_close(parts.task(parts.backbone(emb), context), model(x), rtol=1e-12,
                               atol=1e-12)  # fmt: skip
    torch.testing.assert_close(parts.forward(x), model(x), rtol=1e-12, atol=1e-12)
    # the parts share the model's parameters: nothing is copied
    ids = {id(p) for p in model.parameters()}
    for part in (parts.embedding, parts.backbone, parts.task):
        assert all(id(p) in ids for p in part.parameters())
    n_split = len({id(p) for m in (parts.embedding, parts.backbone, parts.task)
                   for p in m.parameters()})  # fmt: skip
    assert n_split == len(ids)


def test_llm4cp_split_draws_dropout_in_the_model_order():
    """In train mode (dropout in the embedding and in GPT-2) the same seed gives the same output."""
    model = tiny_llm4cp(dropout=0.3).train()
    parts = split_model(model)
    x = torch.randn(3, 4, 16)
    torch.manual_seed(7)
    expected = model(x)
    torch.manual_seed(7)
    torch.testing.assert_close(parts.forward(x), expected)
    torch.manual_seed(8)
    assert not torch.allclose(parts.forward(x), expected)


def test_gpt2_lm_split_equals_model_and_hf_loss():
    model = tiny_gpt2_lm().double().eval()
    parts = split_model(model)
    ids = torch.randint(0, 40, (3, 10))
    out = model(ids, labels=ids)
    logits = parts.forward(ids)
    torch.testing.assert_close(logits, out.logits, rtol=1e-12, atol=1e-12)
    # Hugging Face computes its loss from float32 logits
    torch.testing.assert_close(parts.loss_fn(logits, ids).float(), out.loss, rtol=1e-6, atol=0)


def test_gpt2_lm_device_copy_keeps_lm_head_tied_to_wte():
    parts = split_model(tiny_gpt2_lm())
    device = copy.deepcopy(parts.device_modules())
    assert device["embedding"].wte.weight is device["task"].lm_head.weight
    assert device["embedding"].wte.weight is not parts.embedding.wte.weight
    assert len(list(device.parameters())) == 1


def test_wrong_shapes_raise_clear_errors():
    parts = split_model(tiny_llm4cp())
    with pytest.raises(ValueError, match=r"history of shape \[B, 4, 16\]"):
        parts.embedding(torch.randn(2, 5, 16))
    with pytest.raises(ValueError, match=r"embeddings \[B, L, 16\]"):
        parts.backbone(torch.randn(2, 4, 8))
    lm = split_model(tiny_gpt2_lm())
    with pytest.raises(ValueError, match="input_ids"):
        lm.embedding(torch.randn(2, 5))
    with pytest.raises(ValueError, match="exceeds n_positions=12"):
        lm.embedding(torch.zeros(1, 13, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        causal_lm_loss(torch.randn(2, 5, 40), torch.zeros(2, 4, dtype=torch.long))


class Unknown(nn.Linear):
    pass


def test_unknown_model_type_names_it_and_how_to_register():
    with pytest.raises(TypeError, match=r"test_split\.Unknown.*register_splitter\(Unknown"):
        split_model(Unknown(2, 2))


def test_registered_splitter_applies_to_subclasses():
    class Base(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(2, 3), nn.Linear(3, 3), nn.Linear(3, 1)

        def forward(self, x):
            return self.c(self.b(self.a(x)))

    class Child(Base):
        pass

    class Embed(nn.Module):
        def __init__(self, a):
            super().__init__()
            self.a = a

        def forward(self, x):
            return self.a(x), None

    class Task(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.c = c

        def forward(self, h, context):
            return self.c(h)

    register_splitter(
        Base, lambda m: SplitModel(Embed(m.a), m.b, Task(m.c), nn.functional.mse_loss)
    )
    model = Child()
    x = torch.randn(4, 2)
    torch.testing.assert_close(split_model(model).forward(x), model(x))
