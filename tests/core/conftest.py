import pytest

from tests.core.tiny import tiny_bert


@pytest.fixture
def bert_dir(tmp_path):
    """A tiny BERT classifier saved the way a user's model folder looks (config + safetensors)."""
    path = tmp_path / "tiny-bert"
    tiny_bert().save_pretrained(path)
    return str(path)
