"""Compatibility names: the Hugging Face interop lives in :mod:`bert_jax.interop`; import from there."""

from bert_jax.interop.export import convert_hf_directory, export_hf, export_run  # noqa: F401
from bert_jax.interop.hf_bert import (ARCHITECTURE_PARTS, HF_ACTIVATIONS, PRETRAINING_HEADS,  # noqa: F401
                                      ImportReport, hf_config_to_model_config, hf_state_dict_to_params,
                                      init_pretraining_params, model_config_to_hf_config, params_to_hf_state_dict,
                                      stack_layers, unstack_layers)
from bert_jax.interop.hf_files import (CONFIG_FILE, SAFETENSORS_FILE, SAFETENSORS_INDEX_FILE,  # noqa: F401
                                       TORCH_FILE, WEIGHT_FILES, load_hf_checkpoint, read_hf_config, read_hf_weights)
