"""BERT / RoBERTa -> Longformer conversion: copied position rows, and the converted model equals the source.

Sources are small random (every weight perturbed) transformers ``BertForMaskedLM`` and
``RobertaForMaskedLM`` directories; the Longformer is made with a window longer than the input, so on the
real tokens of a short padded batch it must compute the source's MLM logits (fp32, 1e-5), both in our
model and in transformers' ``LongformerForMaskedLM`` loaded from the written directory.
"""

import numpy as np
import pytest
import torch
import transformers

from bert_jax.heads import PreTrainingModel
from bert_jax.interop import hf_files, to_longformer

ATOL = 1e-5
SIZES = dict(vocab_size=200, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
LENGTHS, SEQ = (24, 17, 9), 24


def _perturbed(model):
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model.eval()


def _inputs(pad: int, first: int, last: int):
    rng = np.random.default_rng(0)
    ids = rng.integers(5, SIZES["vocab_size"], size=(len(LENGTHS), SEQ)).astype(np.int32)
    mask = np.zeros_like(ids)
    for row, length in enumerate(LENGTHS):
        ids[row, 0], ids[row, length - 1], ids[row, length:] = first, last, pad
        mask[row, :length] = 1
    return ids, mask


@pytest.fixture(scope="module", params=["bert", "roberta"])
def source(request, tmp_path_factory):
    torch.manual_seed(0)
    if request.param == "bert":
        config = transformers.BertConfig(**SIZES, max_position_embeddings=40, pad_token_id=0)
        model, pad, offset, special = transformers.BertForMaskedLM(config), 0, 0, (2, 3)
    else:
        config = transformers.RobertaConfig(**SIZES, max_position_embeddings=42, pad_token_id=1, type_vocab_size=1)
        model, pad, offset, special = transformers.RobertaForMaskedLM(config), 1, 2, (0, 2)
    model = _perturbed(model)
    directory = tmp_path_factory.mktemp(request.param) / "source"
    model.save_pretrained(directory)
    return directory, model, pad, offset, special


def test_converted_model_equals_source_on_short_input(source, tmp_path):
    directory, model, pad, offset, special = source
    out = to_longformer.convert(directory, tmp_path / "long", max_positions=100, attention_window=64)
    cfg, params, report = hf_files.load_hf_checkpoint(out)
    assert cfg.architecture == "longformer" and cfg.max_position_embeddings == pad + 1 + 100
    assert report.missing_keys == ("longformer.pooler.dense.weight", "longformer.pooler.dense.bias")

    old = model.base_model.embeddings.position_embeddings.weight.detach().numpy()
    new = params["bert"]["embeddings"]["position_embeddings"]
    usable = old.shape[0] - offset
    for p in (0, 5, usable - 1, usable, usable + 3, 99):  # the copied rows repeat the source's
        np.testing.assert_array_equal(new[pad + 1 + p], old[offset + p % usable])
    layer = params["bert"]["encoder"]["layer_1"]["attention"]
    for name in ("query", "key", "value"):
        np.testing.assert_array_equal(layer[f"{name}_global"]["kernel"], layer[name]["kernel"])

    ids, mask = _inputs(pad, *special)
    with torch.no_grad():
        reference = model(torch.from_numpy(ids.astype(np.int64)),
                          attention_mask=torch.from_numpy(mask.astype(np.int64))).logits.numpy()
    batch = {"input_ids": ids, "segment_ids": np.zeros_like(ids), "sequence_ids": mask, "input_mask": mask,
             "position_ids": np.broadcast_to(np.arange(SEQ, dtype=np.int32), ids.shape),
             "masked_lm_positions": np.zeros((len(LENGTHS), 1), np.int32)}
    ours = np.asarray(PreTrainingModel(cfg).apply({"params": params}, batch,
                                                  method=PreTrainingModel.all_position_logits))
    longformer = transformers.LongformerForMaskedLM.from_pretrained(out).eval()
    with torch.no_grad():
        theirs = longformer(torch.from_numpy(ids.astype(np.int64)),
                            attention_mask=torch.from_numpy(mask.astype(np.int64))).logits.numpy()
    real = mask.astype(bool)
    np.testing.assert_allclose(ours[real], reference[real], rtol=0, atol=ATOL)
    np.testing.assert_allclose(theirs[real], reference[real], rtol=0, atol=ATOL)
