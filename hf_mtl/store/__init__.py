"""The store: one folder layout for a saved model, a local folder and a Hub repo alike.

```
mtl_config.json                  base model + revision, method, tasks, languages, file manifest
<task>/task.json                 the Task (kind, labels, columns, metrics)
<task>/head.safetensors          the task's head
<task>/adapter_config.json       the task's adapter options   } methods with per-task weights
<task>/adapter_model.safetensors the task's adapter weights   }
<task>/hf_mtl_adapter.json       PEFT-format methods (lora): hf_mtl's keys (method, options, base model), so that
                                 adapter_config.json stays a plain PEFT config
shared/adapter_model.safetensors parts shared by tasks (a hypernetwork, ...)
languages/<lang>/adapter_config.json        } language adapters: one folder per language of
languages/<lang>/adapter_model.safetensors  } `adapter.adapter_languages()` (MAD-X, LoRA language adapters)
backbone/                        the backbone (save_pretrained), only when it was trained
```

Modules (import the one you need; this `__init__` imports nothing, so `hf_mtl.hub` can use the
manifest without importing the model):

- `layout`: the file names above, which owner (task, `shared`, `languages/<lang>`, `backbone`) a file belongs to.
- `manifest`: reading and checking `mtl_config.json`, task selection, which files a set of tasks needs.
- `weights`: the one strict loader of saved tensors into a model's parameters.
- `save` / `load`: `MultiTaskModel.save_pretrained` / `from_pretrained` (atomic saves, verified loads).
- `merge`: the repo's config after a push of some of its tasks.
- `card`: the model card (`README.md`) of a pushed store.
- `export`: one task as a standalone transformers model.
"""
