"""`coulisse ner`, `coulisse fill-mask`, `coulisse embed` (`--json` prints what the Python pipeline returns)
and `coulisse explain --task` for the token-classification, fill-mask and feature-extraction stages."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from coulisse import pipeline
from coulisse.interfaces.cli import cli

TEXT = "Emmanuel Macron a rencontré Angela Merkel à Berlin, puis Jean-Baptiste est rentré à Montréal."


def run(*args: str, stdin: str | None = None) -> str:
    result = CliRunner().invoke(cli, list(args), input=stdin)
    assert result.exit_code == 0, result.output
    return result.stdout


def json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


@pytest.mark.parametrize("arch", ["bert", "camembert"])
def test_ner_json_is_the_pipeline_output(task_factory, arch):
    directory = task_factory.checkpoint(arch, "token-classification", model_max_length=40)
    pipe = pipeline("ner", model=directory)
    texts = [TEXT, "Bof.", TEXT * 3]
    records = json_lines(run("ner", "-m", str(directory), "--json", *texts))
    # the CLI groups entities and covers long texts in windows (a quarter of one shared) by default
    expected = pipe(texts, aggregation_strategy="simple", stride=pipe.tokenizer.model_max_length // 4)
    assert [r["text"] for r in records] == texts
    assert [r["entities"] for r in records] == json.loads(json.dumps(expected))
    records = json_lines(run("ner", "-m", str(directory), "-j", "-a", "none", "--ignore-labels", "", TEXT))
    assert records[0]["entities"] == json.loads(json.dumps(pipe(TEXT, ignore_labels=[])))


def test_ner_table(task_factory):
    directory = task_factory.checkpoint("bert", "token-classification", model_max_length=40)
    out = run("ner", "-m", str(directory), stdin=TEXT + "\n")
    first = pipeline("ner", model=directory)(TEXT, aggregation_strategy="simple", stride=10)[0]
    assert out.splitlines()[0] == TEXT[:57] + "..."
    assert f"{first['entity_group']:<14} {first['score']:.4f}  [{first['start']}:{first['end']}]" in out


def test_fill_mask_json_accepts_either_mask_spelling(task_factory):
    directory = task_factory.checkpoint("camembert", "masked-lm")
    pipe = pipeline("fill-mask", model=directory)
    texts = ["Le film est <mask>.", "J'ai <mask> ce film, il est <mask> !"]
    records = json_lines(run("fill-mask", "-m", str(directory), "--json", "Le film est [MASK].", texts[1]))
    assert [r["text"] for r in records] == texts
    assert [r["proposals"] for r in records] == json.loads(json.dumps(pipe(texts)))
    assert len(records[1]["proposals"]) == 2  # one list per mask
    records = json_lines(run("fill-mask", "-m", str(directory), "-j", "-k", "1", "-w", "bon,film",
                             "Le film est <mask>."))
    assert records[0]["proposals"] == json.loads(json.dumps(pipe("Le film est <mask>.", top_k=1,
                                                                 targets=["bon", "film"])))
    out = run("fill-mask", "-m", str(directory), "-k", "2", "Le film est <mask>.")
    assert len(out.splitlines()) == 3


def test_fill_mask_mistakes_are_said_as_the_command_line_reads(task_factory):
    """The pipeline counts texts from 0 (texts[0]) and names its keyword (targets=[]); the command says
    TEXT 2 / line 2 of stdin, and the -w the user typed, before any text runs."""
    directory = str(task_factory.checkpoint("camembert", "masked-lm"))
    for args, stdin, said in [(["Le film est <mask>.", "Pas de masque."], None, "TEXT 2 ('Pas de masque.')"),
                              ([], "Le film est <mask>.\nPas de masque.\n", "line 2 of stdin ('Pas de masque.')"),
                              (["-"], "Le film est <mask>.\nPas de masque.\n", "line 2 of stdin ('Pas de masque.')")]:
        result = CliRunner().invoke(cli, ["fill-mask", "-m", directory, *args], input=stdin)
        assert result.exit_code == 2 and f"{said} has no mask token (<mask>)" in result.stderr, result.output
        assert result.stdout == ""  # the first text is not answered before the mistake is said
    result = CliRunner().invoke(cli, ["fill-mask", "-m", directory, "-w", " , ", "Le film est <mask>."])
    assert result.exit_code == 2 and "'-w' / '--targets': ' , ' holds no word" in result.stderr, result.output


def test_embed_json_is_the_pooled_pipeline_output(task_factory):
    directory = task_factory.checkpoint("roberta", "base")
    pipe = pipeline("feature-extraction", model=directory)
    records = json_lines(run("embed", "-m", str(directory), "--json", "--pooling", "cls", "--normalize", TEXT,
                             "Bof."))
    assert [r["embedding"] for r in records] == json.loads(json.dumps(
        pipe([TEXT, "Bof."], pooling="cls", normalize=True)))
    out = run("embed", "-m", str(directory), TEXT)
    assert out.startswith("dim 32  norm ")


def test_embed_prints_splade_weights(task_factory, tmp_path):
    """A SparseEncoder folder is read as SPLADE without a flag, a bare masked LM with --pooling splade:
    --json prints the pipeline's entries, the plain form the count and the heaviest tokens."""
    from task_factory import sparse_encoder_folder

    folder, _ = sparse_encoder_folder(task_factory, "camembert", tmp_path)
    pipe = pipeline("sparse-embedding", model=folder)
    texts = [TEXT, "Bof."]
    records = json_lines(run("embed", "-m", str(folder), "--json", *texts))
    assert [r["sparse_embedding"] for r in records] == json.loads(json.dumps(pipe(texts)))
    bare = task_factory.checkpoint("bert", "masked-lm")
    bare_pipe = pipeline("sparse-embedding", model=bare)
    entries = bare_pipe("Bof.")
    lines = run("embed", "-m", str(bare), "--pooling", "splade", "Bof.").splitlines()
    assert lines[0].startswith(f"{len(entries)} active of {bare_pipe.vocab_size}  Bof.")
    assert lines[1].split()[:2] == [entries[0]["token"], f"{entries[0]['value']:.2f}"]
    result = CliRunner().invoke(cli, ["embed", "-m", str(bare), "--pooling", "splade", "--normalize", "x"])
    assert result.exit_code == 2 and "--normalize" in result.output, result.output


def test_commands_need_a_model():
    for command in ("ner", "fill-mask", "embed"):
        result = CliRunner().invoke(cli, [command, "x"], env={"COULISSE_MODEL": None})
        assert result.exit_code == 2 and "--model" in result.output


@pytest.mark.parametrize("command", ["ner", "fill-mask", "embed"])
def test_help_carries_examples(command):
    assert "Examples:" in run(command, "--help")


def test_explain_offers_every_task():
    import re

    out = re.sub(r"-\s+", "-", run("explain", "--help"))  # click wraps the list at its hyphens
    for task in ("text-classification", "feature-extraction", "token-classification", "fill-mask",
                 "sentiment-analysis", "ner"):
        assert task in out


def test_explain_token_classification(task_factory):
    directory = task_factory.checkpoint("bert", "token-classification")
    out = run("explain", "--task", "token-classification", "-m", str(directory), TEXT)
    for title in ("1. Tokenizer", "2. Encoder", "3. Head: every token -> logits", "4. Post-processing"):
        assert title in out
    entities = pipeline("ner", model=directory)(TEXT, aggregation_strategy="simple")
    assert f"[{entities[0]['start']}:{entities[0]['end']}]  {entities[0]['word']!r}" in out


def test_explain_lists_a_long_texts_entities_as_ner_does(task_factory):
    """Past the model's limit, the terminal's entities are `coulisse ner`'s (windows over the whole text), as
    the --html page's are; they were the first window's only."""
    directory = task_factory.checkpoint("bert", "token-classification", model_max_length=40)
    text = TEXT * 3
    out = run("explain", "--task", "token-classification", "-m", str(directory), text)
    entities = json_lines(run("ner", "-m", str(directory), "--json", text))[0]["entities"]
    import re

    listed = out[out.index("Entities of the whole text"):]
    assert re.findall(r"  (\[\d+:\d+\])  ", listed) == [f"[{x['start']}:{x['end']}]" for x in entities]
    assert entities[-1]["start"] > len(TEXT)  # past the first window


def test_explain_fill_mask(task_factory):
    directory = task_factory.checkpoint("roberta", "masked-lm")
    out = run("explain", "--task", "fill-mask", "-m", str(directory), "Le film est <mask>.")
    assert "(1 masked of" in out and "only masked positions are projected" in out
    best = pipeline("fill-mask", model=directory)("Le film est <mask>.")[0]
    assert f"{best['score']:.4f}  {best['token_str']!r:<16} {best['sequence']}" in out
    # BERT's spelling is replaced by the model's, as `coulisse fill-mask` does
    assert run("explain", "--task", "fill-mask", "-m", str(directory), "Le film est [MASK].") == out
    result = CliRunner().invoke(cli, ["explain", "--task", "fill-mask", "-m", str(directory), "Pas de trou."])
    assert result.exit_code == 1 and "no mask token" in result.stderr


@pytest.mark.parametrize(("alias", "task"), [("sentiment-analysis", "text-classification"),
                                             ("ner", "token-classification")])
def test_explain_takes_transformers_other_task_names(factory, task_factory, alias, task):
    """The course's `pipeline("sentiment-analysis")`, as `--task` (COULISSE_TASK for the studio too)."""
    directory = factory.checkpoint("camembert") if task == "text-classification" else task_factory.checkpoint(
        "camembert", task)
    assert run("explain", "--task", alias, "-m", str(directory), "Un film.") == run(
        "explain", "--task", task, "-m", str(directory), "Un film.")


def test_explain_feature_extraction_pools(minilm_dir):
    out = run("explain", "--task", "feature-extraction", "-m", str(minilm_dir), "Le chat dort.")
    assert "3. Pooling" in out and "sentence-transformers modules" in out and "norm 1.0000" in out


def test_fill_mask_table_keeps_small_scores_readable(task_factory):
    """Scores spread over a 32,000-token vocabulary are small: four significant digits, not four decimals
    (which print 0.0000 below 0.00005)."""
    directory = task_factory.checkpoint("camembert", "masked-lm")
    text = "Le film est <mask>."
    proposals = pipeline("fill-mask", model=directory)(text, top_k=3)
    out = run("fill-mask", "-m", str(directory), "-k", "3", text)
    shown = [line.split()[0] for line in out.splitlines()[1:]]
    assert shown == [f"{p['score']:.4g}" for p in proposals], out
    assert all(float(s) > 0 for s in shown), out


def test_plain_output_keeps_one_line_per_result(factory, tmp_path):
    """A label or a text with a newline or an escape sequence cannot print a second, forged result line,
    nor colour the terminal: each text gives exactly one line, its controls escaped."""
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(factory.checkpoint("camembert", num_labels=2), folder)
    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {"0": "NEG\nPOSITIVE 1.0000  forged", "1": "POS\x1b[31m"}
    config["label2id"] = {v: int(k) for k, v in config["id2label"].items()}
    (folder / "config.json").write_text(json.dumps(config))
    out = run("classify", "-m", str(folder), "-k", "2", "Super\nPOSITIVE 1.0000  fake\x1b[2J")
    assert len(out.splitlines()) == 1 and "\x1b" not in out
    assert "NEG\\nPOSITIVE 1.0000  forged" in out and "POS\\x1b[31m" in out and "fake\\x1b[2J" in out


def test_classify_refuses_to_print_a_nan_score(factory, tmp_path):
    """Finite weights can still overflow (here 3e38 in the classifier): corpus jobs write an error row and
    the server a 500 for that; the single-text command says so in one line instead of `NEGATIVE nan`."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "model"
    shutil.copytree(factory.checkpoint("camembert", num_labels=2), folder)
    tensors = load_file(str(folder / "model.safetensors"))
    key = next(k for k in tensors if k.endswith("out_proj.weight"))  # the logits layer
    tensors[key] = torch.full_like(tensors[key], 3e38)
    save_file(tensors, str(folder / "model.safetensors"))
    result = CliRunner().invoke(cli, ["classify", "-m", str(folder), "un film", "un autre"])
    assert result.exit_code == 1
    assert "the scores of text 1 are not finite (NaN or infinity)" in result.output and "nan" not in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--all-scores", "Bien."], "--all-scores applies to --input jobs and --ray jobs, not to TEXT arguments; for "
                                "TEXT arguments, -k N prints the N best labels."),
    (["-b", "8", "Bien."], "--batch-rows applies to --input jobs and --ray jobs, not to TEXT arguments."),
    (["--no-progress", "Bien."], "--no-progress applies to --input jobs"),
    (["--column", "avis", "Bien."], "--column applies to --input jobs"),
    (["--actors", "2", "Bien."], "--actors applies to --ray jobs, not to TEXT arguments."),
    (["-i", "in.csv", "-o", "out.csv", "--address", "auto"], "--address applies to --ray jobs, not to --input jobs."),
    (["-i", "in.csv", "--shard-format", "jsonl"], "--shard-format applies to --ray jobs, not to --input jobs."),
    (["-i", "in.csv", "-k", "2"], "--top-k applies to TEXT arguments, not to --input jobs; a job writes the best "
                                  "label, and every label's score with --all-scores."),
    (["-i", "in.csv", "-o", "out.csv", "--json"], "--json prints TEXT results as JSON lines; a job writes the "
                                                  "format of --output out.csv"),
    (["--stride", "8", "Bien."], "--stride only applies with --long-text chunk."),
])
def test_classify_refuses_an_option_its_mode_would_ignore(tmp_path, monkeypatch, args, message):
    """Said in one line before anything is read or loaded (in.csv does not exist)."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["classify", *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("args", "message"), [
    (["-m", "x", "--overwrite", "Bien."], "--overwrite applies to --input jobs and --ray jobs, not to TEXT"),
    (["-m", "x", "-i", "in.csv", "--actors", "2"], "--actors applies to --ray jobs, not to --input jobs."),
])
def test_embed_refuses_an_option_its_mode_would_ignore(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["embed", *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


def test_a_job_option_from_its_variable_leaves_text_runs_alone(tf_camembert_dir):
    """COULISSE_* variables set for jobs (a shell profile, a container) must not break `classify TEXT`."""
    env = {"COULISSE_BATCH_ROWS": "8", "COULISSE_ALL_SCORES": "1", "COULISSE_ACTORS": "2", "COULISSE_QUIET": "1"}
    result = CliRunner().invoke(cli, ["classify", "-m", str(tf_camembert_dir), "--json", "Bien."], env=env)
    assert result.exit_code == 0, result.output
    assert json_lines(result.stdout)[0]["text"] == "Bien."


def test_classify_text_reads_long_text_in_windows_as_a_job_does(tf_camembert_dir, tmp_path):
    """`classify --long-text chunk TEXT` prints what `classify --input --long-text chunk` writes for the same
    text (the mean of its windows' logits), not the truncated text's label."""
    text = "Un film magnifique, des acteurs formidables. " * 60 + "Mais quelle fin ennuyeuse et ratée. " * 60
    model = ["-m", str(tf_camembert_dir)]
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"text": text}) + "\n", encoding="utf-8")
    for stride in ([], ["--stride", "5"]):
        job = json_lines(run("classify", *model, "-i", str(source), "--long-text", "chunk", "--quiet", *stride))[0]
        printed = json_lines(run("classify", *model, "--json", "--long-text", "chunk", *stride, text))[0]
        assert (printed["label"], printed["score"]) == (job["label"], job["score"])
    truncated = json_lines(run("classify", *model, "--json", text))[0]
    assert truncated["score"] != printed["score"]
