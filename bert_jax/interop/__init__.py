"""Interop: where runs start from and how checkpoints leave the house.

* :mod:`bert_jax.interop.hf_bert`: the Hugging Face BERT <-> bert-jax conversion table and configs.
* :mod:`bert_jax.interop.hf_files`: reading and writing Hugging Face directories.
* :mod:`bert_jax.interop.init_source`: what ``init_from`` names, the model config and tokenizer it
  implies, and the Hugging Face importer (used by ``train``, ``finetune`` and ``inference``).
* :mod:`bert_jax.interop.export`: export of every kind of run (``python -m launch.export_hf``).
* :mod:`bert_jax.interop.model_card`: the exported directory's ``README.md``.
"""
