"""Deployable artifacts: engine launch commands, manifests, expert maps."""


def hf_model_id(model: str) -> str:
    """The Hugging Face id an engine should serve for ``model``: a fixture alias maps to its
    config's ``_name_or_path``; an id or a local path passes through unchanged."""
    from costmodels.model import aliases, load_model
    if model.lower() in aliases():
        return load_model(model).hf_id or model
    return model
