"""config.json is untrusted input: every value is type- and range-checked before anything is built from it,
each violation one typed line naming the field, the value, the limit and the fix. The limits must still
admit every real checkpoint: transformers' own default configs and the largest released encoders."""

from __future__ import annotations

import json

import pytest

from coulisse.config import INT_RANGES, MAX_CONFIG_BYTES, MAX_PARAMETERS, EncoderConfig, parameter_floor
from coulisse.errors import ModelLoadError, UnsafeCheckpointError, UnsupportedModelError

BASE = {"model_type": "bert", "vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 2,
        "num_attention_heads": 4, "intermediate_size": 64}
FIX = "Fix config.json or download the checkpoint again."


def _load(tmp_path, text: str) -> EncoderConfig:
    path = tmp_path / "config.json"
    path.write_text(text)
    return EncoderConfig.from_file(path)


def _refused(tmp_path, changes: dict, error=UnsafeCheckpointError) -> str:
    config = {k: v for k, v in {**BASE, **changes}.items() if v is not None}
    with pytest.raises(error) as info:
        _load(tmp_path, json.dumps(config))
    message = str(info.value)
    assert "\n" not in message
    return message


# --- the exact line for the cases of issue 12 -------------------------------------------------------------------

@pytest.mark.parametrize(("changes", "expected"), [
    ({"num_labels": 1e9}, "num_labels = 1000000000.0; expected an integer from 0 to 100,000"),
    ({"num_hidden_layers": 10**7}, "num_hidden_layers = 10000000; expected an integer from 1 to 1,000"),
    ({"num_attention_heads": 0}, "num_attention_heads = 0; expected an integer from 1 to 1,024"),
    ({"num_attention_heads": 5}, "num_attention_heads = 5; expected a divisor of hidden_size (32)"),
    ({"hidden_size": "768"}, "hidden_size = '768'; expected an integer from 1 to 65,536"),
    ({"num_hidden_layers": 2.5}, "num_hidden_layers = 2.5; expected an integer from 1 to 1,000"),
    ({"num_hidden_layers": True}, "num_hidden_layers = True; expected an integer from 1 to 1,000"),
    ({"id2label": {"zero": "NEG"}}, "id2label = {'zero': 'NEG'}; expected int keys and str values"),
    ({"id2label": {"0": "NEG", "2": "POS"}}, "id2label = {'0': 'NEG', '2': 'POS'}; expected ids 0 to 1, one per "
                                             "output of the classifier"),
    ({"id2label": {"0": {"a": 1}}}, "id2label = {'0': {'a': 1}}; expected int keys and str values"),
    ({"label2id": {"NEG": 0.5}}, "label2id = {'NEG': 0.5}; expected str keys and int values"),
    ({"layer_norm_eps": "1e-12"}, "layer_norm_eps = '1e-12'; expected a number between 0 and 1"),
    ({"layer_norm_eps": 0}, "layer_norm_eps = 0; expected a number between 0 and 1"),
    ({"pre_norm": "yes"}, "pre_norm = 'yes'; expected true or false"),
    ({"summary_activation": ["tanh"]}, "summary_activation = ['tanh']; expected a string"),
    ({"architectures": "BertModel"}, "architectures = 'BertModel'; expected a list of class names"),
    ({"max_relative_positions": "far"}, "max_relative_positions = 'far'; expected an integer from -1 to 131,072"),
    ({"model_type": "mpnet", "relative_attention_num_buckets": 10**9},
     "relative_attention_num_buckets = 1000000000; expected an integer from 1 to 131,072"),
    ({"model_type": "mpnet", "relative_attention_num_buckets": "32"},
     "relative_attention_num_buckets = '32'; expected an integer from 1 to 131,072"),
    ({"model_type": "modernbert", "global_attn_every_n_layers": 0},
     "global_attn_every_n_layers = 0; expected an integer from 1 to 1,000"),
    ({"model_type": "modernbert", "local_attention": -8},
     "local_attention = -8; expected an integer from 0 to 262,144"),
    ({"model_type": "modernbert", "norm_bias": "no"}, "norm_bias = 'no'; expected true or false"),
    ({"model_type": "modernbert", "classifier_pooling": ["mean"]}, "classifier_pooling = ['mean']; expected a string"),
    ({"model_type": "roberta", "max_position_embeddings": 10, "pad_token_id": 20},
     "max_position_embeddings = 10; expected more than pad_token_id + 1 = 21"),
    ({"model_type": "mpnet", "max_position_embeddings": 2, "pad_token_id": 20},  # MPNet's padding index is 1
     "max_position_embeddings = 2; expected more than its padding index + 1 = 2"),
])
def test_each_violation_is_one_line_naming_field_value_limit_and_fix(changes, expected, tmp_path):
    message = _refused(tmp_path, changes)
    assert message.startswith(f"config.json has {expected}") and message.endswith(FIX), message


@pytest.mark.parametrize(("token", "shown"), [("NaN", "nan"), ("Infinity", "inf"), ("-Infinity", "-inf")])
@pytest.mark.parametrize("field", ["vocab_size", "num_labels", "layer_norm_eps"])
def test_nan_and_infinity_are_refused(field, token, shown, tmp_path):
    text = json.dumps(BASE)[:-1] + f', "{field}": {token}}}'
    with pytest.raises(UnsafeCheckpointError, match=f"config.json has {field} = {shown}; expected "):
        _load(tmp_path, text)


@pytest.mark.parametrize("model_type", [["bert"], {"a": 1}, 3, None])
def test_model_type_of_the_wrong_type_is_unsupported(model_type, tmp_path):
    message = _refused(tmp_path, {"model_type": model_type} if model_type is not None else {"model_type": None},
                       error=ModelLoadError)
    assert message.startswith("unsupported model_type ")


def test_unknown_activation_says_what_is_supported(tmp_path):
    message = _refused(tmp_path, {"hidden_act": "mish"}, error=ModelLoadError)
    assert message.startswith("config.json has hidden_act = 'mish', which coulisse does not implement; supported: "
                              "gelu, gelu_fast, gelu_new, gelu_python, gelu_pytorch_tanh, relu, silu, swish, tanh.")


@pytest.mark.parametrize(("model_type", "changes", "key"), [
    ("distilbert", {"activation": "mish"}, "activation"),
    ("modernbert", {"hidden_activation": "mish"}, "hidden_activation"),
    ("distilbert", {"dim": 32, "n_heads": 5, "hidden_size": None, "num_attention_heads": None}, "n_heads"),
])
def test_an_error_names_the_field_as_the_file_spells_it(tmp_path, model_type, changes, key):
    message = _refused(tmp_path, {"model_type": model_type, **changes}, error=ModelLoadError)
    assert message.startswith(f"config.json has {key} = "), message


@pytest.mark.parametrize("model_type", ["bert", "roberta", "camembert", "xlm-roberta", "electra"])
@pytest.mark.parametrize("flag", ["is_decoder", "add_cross_attention"])
def test_a_decoder_checkpoint_is_refused_not_run_as_an_encoder(tmp_path, model_type, flag):
    """transformers runs these families with causal attention under `is_decoder` (audit 39: a BERT classifier's
    logits moved by 0.75 and its label changed when coulisse read every token); families whose transformers code
    never reads the flag load as before."""
    message = _refused(tmp_path, {"model_type": model_type, flag: True}, error=UnsupportedModelError)
    said = {"is_decoder": "runs this checkpoint as a decoder (causal attention",
            "add_cross_attention": "gives this checkpoint a decoder's cross-attention layers"}[flag]
    assert message.startswith(f"config.json has {flag} = True: transformers {said}"), message
    assert f"coulisse runs {model_type} encoders" in message
    _load(tmp_path, json.dumps({**BASE, "model_type": model_type, flag: False}))
    _load(tmp_path, json.dumps({**BASE, "model_type": "distilbert", flag: True}))


@pytest.mark.parametrize("kind", ["relative_key", "relative_key_query", "magic", 3])
def test_relative_position_embeddings_are_refused_not_run_as_absolute(kind, tmp_path):
    """BERT's relative_key variants add distance embeddings to attention; running them as absolute would
    give other logits without a word."""
    message = _refused(tmp_path, {"position_embedding_type": kind}, error=UnsupportedModelError)
    assert message.startswith(f"config.json has position_embedding_type = {kind!r}") and "absolute" in message


def test_label_tables_larger_than_the_limit_are_refused_before_conversion(tmp_path):
    labels = {str(i): f"L{i}" for i in range(INT_RANGES["num_labels"][1] + 1)}
    message = _refused(tmp_path, {"id2label": labels})
    assert "expected an object of at most 100,000 labels" in message


# --- sizes that pass one by one but multiply out -----------------------------------------------------------------

def test_parameter_count_is_bounded(tmp_path):
    huge = {"vocab_size": 4_000_000, "hidden_size": 65_536, "num_attention_heads": 64, "num_hidden_layers": 1_000,
            "intermediate_size": 262_144}
    message = _refused(tmp_path, huge)
    floor = 4_000_000 * 65_536 + (512 + 2) * 65_536 + 1_000 * (4 * 65_536**2 + 2 * 65_536 * 262_144)
    assert message == (
        f"config.json describes an encoder of at least {floor:,} parameters (vocab_size = 4,000,000, hidden_size = "
        "65,536, num_hidden_layers = 1,000, intermediate_size = 262,144); expected at most 20,000,000,000, more "
        f"than any released encoder. {FIX}")


def _transformers_count(config) -> int:
    """transformers' exact parameter count for `config`, its model built on the meta device (no memory)."""
    import torch
    from transformers import AutoModel

    with torch.device("meta"):
        return sum(p.numel() for p in AutoModel.from_config(config).parameters())


@pytest.mark.slow
def test_the_floor_is_a_lower_bound_of_transformers_count_for_every_family():
    for model_type, default in _transformers_defaults().items():
        exact = _transformers_count(default)
        config = {**default.to_dict(), "model_type": model_type}
        floor = parameter_floor(vars(EncoderConfig.from_dict(config)))
        # Biases, LayerNorms, poolers and relative-position tables are left out: a few % of a model.
        assert 0.9 * exact <= floor <= exact, f"{model_type}: floor {floor:,}, transformers {exact:,}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["xlm-roberta-xxl", "xlm-roberta-xl", "deberta-v2-xxlarge"])
def test_the_largest_real_encoders_pass(name, tmp_path):
    transformers = pytest.importorskip("transformers")
    # Their config.json's sizes (Hugging Face model cards: 10.7 B, 3.5 B and 1.5 B parameters).
    config = {
        "xlm-roberta-xxl": transformers.XLMRobertaXLConfig(
            vocab_size=250_880, hidden_size=4_096, num_hidden_layers=48, num_attention_heads=32,
            intermediate_size=16_384, max_position_embeddings=514, type_vocab_size=1),
        "xlm-roberta-xl": transformers.XLMRobertaXLConfig(
            vocab_size=250_880, hidden_size=2_560, num_hidden_layers=36, num_attention_heads=32,
            intermediate_size=10_240, max_position_embeddings=514, type_vocab_size=1),
        "deberta-v2-xxlarge": transformers.DebertaV2Config(
            vocab_size=128_100, hidden_size=1_536, num_hidden_layers=48, num_attention_heads=24,
            intermediate_size=6_144, max_position_embeddings=512, type_vocab_size=0, relative_attention=True,
            position_buckets=256, pos_att_type=["p2c", "c2p"], position_biased_input=False),
    }[name]
    exact = _transformers_count(config)
    ours = config.to_dict()
    ours["model_type"] = "xlm-roberta" if name.startswith("xlm") else "deberta-v2"
    loaded = _load(tmp_path, json.dumps(ours))
    assert parameter_floor(vars(loaded)) <= exact < MAX_PARAMETERS / 1.8


def _transformers_defaults():
    transformers = pytest.importorskip("transformers")
    names = {"bert": "BertConfig", "roberta": "RobertaConfig", "camembert": "CamembertConfig",
             "xlm-roberta": "XLMRobertaConfig", "distilbert": "DistilBertConfig", "electra": "ElectraConfig",
             "flaubert": "FlaubertConfig", "deberta-v2": "DebertaV2Config", "mpnet": "MPNetConfig",
             "modernbert": "ModernBertConfig"}
    return {model_type: getattr(transformers, cls)() for model_type, cls in names.items()}


def test_transformers_default_configs_of_every_family_load(tmp_path):
    for model_type, default in _transformers_defaults().items():
        config = {**default.to_dict(), "model_type": model_type}
        loaded = _load(tmp_path, json.dumps(config))
        assert loaded.model_type == model_type and loaded.num_labels == len(config["id2label"])


def test_real_config_files_load(minilm_dir, tf_camembert_dir):
    assert EncoderConfig.from_file(minilm_dir / "config.json").hidden_size == 384
    assert EncoderConfig.from_file(tf_camembert_dir / "config.json").num_labels == 2


# --- what JSON itself can carry --------------------------------------------------------------------------------

def test_a_5000_digit_integer_is_named(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(BASE)[:-1] + ', "num_labels": ' + "9" * 5000 + "}")
    with pytest.raises(UnsafeCheckpointError) as info:
        EncoderConfig.from_file(path)
    assert str(info.value) == (
        f"config.json at {path} is refused: it has num_labels = 999999999999... (5,000 digits), past Python's "
        f"limit of 4,300 digits; no config value needs more than 10. {FIX}")


def test_deep_nesting_is_one_line(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"model_type": "bert", "x": ' + "[" * 200_000 + "]" * 200_000 + "}")
    with pytest.raises(UnsafeCheckpointError) as info:
        EncoderConfig.from_file(path)
    assert str(info.value).startswith(f"config.json at {path} is refused: its JSON nests deeper than the parser "
                                      "allows")
    assert str(info.value).endswith(FIX)


def test_a_value_nested_just_under_the_parser_limit_is_shown_briefly(tmp_path):
    text = json.dumps(BASE)[:-1] + ', "summary_activation": ' + "[" * 900 + "]" * 900 + "}"
    with pytest.raises(UnsafeCheckpointError) as info:
        _load(tmp_path, text)
    assert str(info.value) == f"config.json has summary_activation = [[[[...]]]]; expected a string. {FIX}"


def test_an_oversized_config_is_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    with path.open("wb") as f:  # sparse: no disk used
        f.truncate(MAX_CONFIG_BYTES + 1)
    monkeypatch.setattr(type(path), "read_text", lambda *a, **k: pytest.fail("read"))
    with pytest.raises(UnsafeCheckpointError) as info:
        EncoderConfig.from_file(path)
    assert str(info.value) == (
        f"config.json at {path} is refused: it holds {MAX_CONFIG_BYTES + 1:,} bytes, more than the "
        f"{MAX_CONFIG_BYTES:,} a config needs even with 100,000 labels; fix it or download the checkpoint again.")


def test_a_folder_named_config_json_is_a_load_error(tmp_path):
    (tmp_path / "config.json").mkdir()
    with pytest.raises(ModelLoadError, match="config.json at .* is not a regular file"):
        EncoderConfig.from_file(tmp_path / "config.json")


def test_a_config_that_is_no_regular_file_is_refused_before_it_blocks(tmp_path):
    """A FIFO named config.json (a tar archive can carry one) blocked the load forever (audit 39)."""
    from fifo import fifo_at

    with fifo_at(tmp_path / "config.json") as path, pytest.raises(ModelLoadError, match="is not a regular file"):
        EncoderConfig.from_file(path)
