"""The `coulisse` command: classify and explain from a Hugging Face cache laid out like tblard/tf-allocine
(offline), as a real subprocess and through click's CliRunner; and one-line errors, exit code 1, no
traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from broken import BROKEN, build
from click.testing import CliRunner
from factory import make_hf_cache

from coulisse.interfaces.cli import cli

REPO = "tblard/tf-allocine"
TEXTS = ["J'ai attendu un cours d'HuggingFace toute ma vie.", "Je déteste tellement ça !"]


@pytest.fixture(scope="module")
def expected(tf_camembert_dir):
    """TensorFlow's answers for the fixture texts: label and softmax score."""
    data = json.loads((tf_camembert_dir / "expected.json").read_text(encoding="utf-8"))
    logits = np.asarray(data["logits"], dtype=np.float64)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return {t: (["NEGATIVE", "POSITIVE"][int(p.argmax())], float(p.max()), p)
            for t, p in zip(data["texts"], probs, strict=True)}


@pytest.fixture(scope="module")
def cache(tmp_path_factory, tf_camembert_dir):
    root = tmp_path_factory.mktemp("hf") / "hub"
    make_hf_cache(root, tf_camembert_dir)
    return root


@pytest.fixture
def offline_env(monkeypatch, cache):
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("COULISSE_MODEL", raising=False)
    return {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}


def coulisse_command() -> list[str]:
    script = Path(sys.executable).parent / "coulisse"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "coulisse.interfaces.cli"]


def run_cli(args, env, stdin=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in env.items() if k != "COULISSE_MODEL"}
    return subprocess.run([*coulisse_command(), *args], capture_output=True, text=True, env=env, input=stdin,
                          timeout=300)


def check_table(stdout: str, texts, expected) -> None:
    lines = stdout.strip().splitlines()
    assert len(lines) == len(texts)
    for line, text in zip(lines, texts, strict=True):
        label, score, _ = expected[text]
        got_label, got_score, shown = line.split(maxsplit=2)
        assert got_label == label and abs(float(got_score) - score) <= 1e-4
        assert text.startswith(shown.removesuffix("...")[:40])


@pytest.mark.slow
def test_classify_in_a_subprocess_reads_the_offline_cache(offline_env, expected):
    done = run_cli(["classify", *TEXTS], offline_env)
    assert done.returncode == 0, done.stderr
    check_table(done.stdout, TEXTS, expected)
    assert "Traceback" not in done.stderr

    done = run_cli(["classify", "--json"], offline_env, stdin="\n".join(TEXTS) + "\n\n")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["text"] for r in records] == TEXTS
    for r in records:
        assert r["label"] == expected[r["text"]][0] and abs(r["score"] - expected[r["text"]][1]) <= 1e-4


@pytest.mark.slow
def test_cli_error_in_a_subprocess_is_one_line(tmp_path, offline_env):
    env = {**offline_env, "HF_HUB_CACHE": str(tmp_path / "empty")}
    done = run_cli(["classify", "-m", REPO, "Bof."], env)  # named: no fallback to the bundled model
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and REPO in lines[0], done.stderr


USAGE_MISTAKES = [
    ["explain", "--task", "zero-shot-classification", "--labels", "a,b", "-a", "Bien."],  # no --model
    ["fill-mask", "Le film est <mask>."],  # no --model
    ["classify", "-m", "x", "Bien.", ""],  # an empty text
    ["explain", "--task", "question-answering", "-m", "x", "Le contexte."],  # no --question
]


@pytest.mark.parametrize("args", USAGE_MISTAKES, ids=lambda a: " ".join(a[:3]))
def test_usage_mistakes_are_said_without_importing_torch(args, offline_env):
    """A mistake the command line alone shows is said before torch is imported (~3 s on a cold start): the
    command's module imports nothing heavy, and the checks run before the pipeline is built."""
    code = ("import sys\nfrom coulisse.interfaces.cli import main\nsys.argv[0] = 'coulisse'\n"
            "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
            "print('torch' in sys.modules, code, file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=offline_env,
                          timeout=120)
    torch_loaded, code = done.stderr.strip().splitlines()[-1].split()
    assert code in {"1", "2"}, done.stderr
    assert torch_loaded == "False", done.stderr

def test_classify_with_cli_runner(offline_env, expected):
    result = CliRunner().invoke(cli, ["classify", *TEXTS])
    assert result.exit_code == 0, result.output
    check_table(result.stdout, TEXTS, expected)


def test_classify_json_top_k_and_stdin(offline_env, expected):
    result = CliRunner().invoke(cli, ["classify", "--json", "--top-k", "2"], input="\n".join(TEXTS) + "\n")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in records] == TEXTS
    for r in records:
        label, score, probs = expected[r["text"]]
        assert r["label"] == label and abs(r["score"] - score) <= 1e-4
        assert [s["label"] for s in r["scores"]] == [["NEGATIVE", "POSITIVE"][i] for i in np.argsort(-probs)]
        assert abs(sum(s["score"] for s in r["scores"]) - 1) <= 1e-5


def test_model_option_and_environment_fallback(monkeypatch, tf_camembert_dir, expected):
    result = CliRunner().invoke(cli, ["classify", "-m", str(tf_camembert_dir), TEXTS[1]])
    assert result.exit_code == 0, result.output
    check_table(result.stdout, TEXTS[1:], expected)
    monkeypatch.setenv("COULISSE_MODEL", str(tf_camembert_dir))
    result = CliRunner().invoke(cli, ["classify", TEXTS[0]])
    assert result.exit_code == 0, result.output
    check_table(result.stdout, TEXTS[:1], expected)


def test_explain_shows_every_stage(offline_env, expected, tf_camembert_dir):
    data = json.loads((tf_camembert_dir / "expected.json").read_text(encoding="utf-8"))
    result = CliRunner().invoke(cli, ["explain", TEXTS[0]])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for title in ("1. Tokenizer", "2. Encoder", "3. Head", "4. Post-processing"):
        assert title in out
    assert str(data["input_ids"][0]) in out
    assert "attention_mask" in out and "▁cours" in out
    assert "{0: 'NEGATIVE', 1: 'POSITIVE'}" in out
    label, score, _ = expected[TEXTS[0]]
    assert f"Answer: {label} ({score:.4f})" in out


def test_the_top_level_help_examples_run_offline(tmp_path, monkeypatch):
    """`coulisse --help`'s examples are a newcomer's first commands: they run without the Hub (the bundled model),
    where an example naming a Hub model would fail."""
    import shlex

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.delenv("COULISSE_MODEL", raising=False)
    runner = CliRunner()
    shown = runner.invoke(cli, ["--help"]).stdout
    examples = [line.strip() for line in shown.split("Examples:")[1].split("\n\n")[0].splitlines() if line.strip()]
    assert len(examples) == 2, shown
    for example in examples:
        args = shlex.split(example)
        assert args[0] == "coulisse"
        result = runner.invoke(cli, args[1:])
        assert result.exit_code == 0, (example, result.output)


def test_help_carries_examples_and_version():
    runner = CliRunner()
    assert "Examples:" in runner.invoke(cli, ["classify", "--help"]).stdout
    assert "Examples:" in runner.invoke(cli, ["explain", "--help"]).stdout
    version = runner.invoke(cli, ["--version"])
    assert version.exit_code == 0 and "0.1.0" in version.stdout


def short_options() -> dict[str, set[str]]:
    """Each short option of every command -> the long options it stands for, across commands."""
    import click

    seen: dict[str, set[str]] = {}
    for name, command in cli.commands.items():
        for param in command.params:
            if isinstance(param, click.Option):
                longs = [o for o in param.opts if o.startswith("--")]
                for short in (o for o in param.opts if not o.startswith("--")):
                    seen.setdefault(short, set()).add(longs[0] if longs else f"{name} {short}")
    return seen


def test_a_short_option_that_takes_a_file_or_a_count_means_the_same_in_every_command():
    """`-i FILE` is the input wherever it exists (ner's `-i` read a file name as labels to hide), `-k N` the
    number of answers (serve's `-k 3` turned an API key "3" on), `-m` the model, `-o` where results go: a short
    option carried from one command to another never lands silently on another meaning."""
    seen = short_options()
    assert seen["-i"] == {"--input"}
    assert seen["-k"] == {"--top-k"}
    assert seen["-m"] == {"--model"}
    assert seen["-o"] <= {"--output", "--output-dir"}  # evaluate writes a folder
    assert seen["-t"] == {"--threads"}
    assert seen["-q"] == {"--quantize"}


def assert_one_line_error(result, *words) -> None:
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_checkpoints_print_one_line_errors(name, factory, tf_camembert_dir, tmp_path):
    directory = build(name, factory, tf_camembert_dir, tmp_path / name)
    result = CliRunner().invoke(cli, ["classify", "-m", str(directory), "Bof."])
    assert_one_line_error(result, BROKEN[name].error.__name__)


def test_bad_model_and_inputs_print_one_line_errors(tmp_path, monkeypatch, tf_camembert_dir):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    runner = CliRunner()
    assert_one_line_error(runner.invoke(cli, ["classify", "-m", str(tmp_path / "nope"), "x"]), "nope")
    assert_one_line_error(runner.invoke(cli, ["classify", "-m", REPO, "x"]), REPO, str(tmp_path / "empty"))
    missing = "tblard/nothing-here"
    assert_one_line_error(runner.invoke(cli, ["explain", "-m", missing, "x"]), missing)


def usage_error(result) -> str:
    """The `Error:` line of a usage error (exit 2, nothing on stdout, no traceback)."""
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and "Traceback" not in result.output
    return result.stderr.strip().splitlines()[-1]


def test_usage_mistakes_are_said_before_a_model_is_looked_for(tmp_path, monkeypatch):
    """What a first try gets wrong (a zero count, an empty stdin, --fast beside --quantize, a bad COULISSE_*
    value) is named in the CLI's words, and before the model: this one does not exist, and is never reported."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    runner = CliRunner()
    model = ["-m", str(tmp_path / "no-such-model")]
    line = usage_error(runner.invoke(cli, ["classify", *model, "-k", "0", "x"]))
    assert "'-k' / '--top-k': 0 is not positive" in line
    line = usage_error(runner.invoke(cli, ["classify", *model, "-t", "0", "x"]))
    assert "'-t' / '--threads': 0 is not positive" in line
    for command in (["classify"], ["explain"], ["explain", "--html", str(tmp_path / "page.html")], ["ner"],
                    ["embed"], ["fill-mask"]):
        line = usage_error(runner.invoke(cli, [*command, *model], input="\n  \n"))
        assert "stdin held no text" in line, (command, line)
    assert not (tmp_path / "page.html").exists()
    # An empty TEXT (an unset "$REVIEW") is a mistake in every command, not a text to answer about.
    for command in (["classify"], ["explain"], ["ner"], ["embed"], ["fill-mask"], ["zero-shot", "-l", "a,b"]):
        for empty, said in (("", "TEXT 2 is empty;"), (" \t", "TEXT 2 is empty (only spaces);")):
            line = usage_error(runner.invoke(cli, [*command, *model, "Bien.", empty]))
            assert said in line, (command, line)
    line = usage_error(runner.invoke(cli, ["classify", *model, "--fast", "-q", "int8", "x"]))
    assert line == "Error: --fast picks the precision itself; drop --quantize int8, or drop --fast."
    line = usage_error(runner.invoke(cli, ["classify", *model, "x"], env={"COULISSE_QUANTIZE": "int4"}))
    assert "Invalid value for the environment variable COULISSE_QUANTIZE: 'int4'" in line
    line = usage_error(runner.invoke(cli, ["classify", *model, "x"], env={"COULISSE_THREADS": "0"}))
    assert "the environment variable COULISSE_THREADS: 0 is not positive" in line
    line = usage_error(runner.invoke(cli, ["classify", "x", "-t", "0"], env={"COULISSE_THREADS": "2"}))
    assert "'-t' / '--threads'" in line  # typed: the option is named, not the variable


@pytest.mark.parametrize("args, said", [
    (["classify", "-i", "in.csv", "-b", "0"], "'-b' / '--batch-rows': 0 is not in the range x>=1"),
    (["embed", "-i", "in.csv", "-b", "-1"], "'-b' / '--batch-rows': -1 is not in the range x>=1"),
    (["classify", "--long-text", "chunk", "--stride", "-5", "x"], "'--stride': -5 is not in the range x>=0"),
    (["ner", "-s", "-1", "x"], "'-s' / '--stride': -1 is not in the range x>=0"),
    (["qa", "-c", "Le contexte.", "-d", "-3", "Qui ?"], "'-d' / '--doc-stride': -3 is not in the range x>=0"),
    (["evaluate", "-i", "in.csv", "-n", "0"], "'-n' / '--limit': 0 is not in the range x>=1"),
    (["evaluate", "-i", "in.csv", "-s", "-2"], "'-s' / '--sample': -2 is not in the range x>=1"),
], ids=lambda a: " ".join(a) if isinstance(a, list) else None)
def test_counts_out_of_range_are_usage_errors_before_the_model(tmp_path, monkeypatch, args, said):
    """A count the command line shows wrong is a usage error (exit 2) naming the flag typed, before the model is
    looked for (this one does not exist), as -k 0 is; the library said it later, as doc_stride=-3 (audit 43)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.csv").write_text("text,label\nBien.,POSITIVE\n", encoding="utf-8")
    line = usage_error(CliRunner().invoke(cli, [args[0], "-m", str(tmp_path / "no-such-model"), *args[1:]]))
    assert said in line, line


def test_a_text_that_names_a_file_is_refused_and_dash_reads_stdin(tmp_path, monkeypatch, tf_camembert_dir):
    """`coulisse classify reviews.csv` (-i forgotten) would label the file's name: refused before the model loads
    (this one does not exist), saying how to read the file; `-` alone reads stdin, as it does for most tools."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reviews.csv").write_text("text\nQuel navet\n", encoding="utf-8")
    runner = CliRunner()
    model = ["-m", str(tmp_path / "no-such-model")]
    line = usage_error(runner.invoke(cli, ["classify", *model, "Bien.", "reviews.csv"]))
    assert line.startswith("Error: TEXT 2 'reviews.csv' is a file; to read its rows, pass -i reviews.csv"), line
    line = usage_error(runner.invoke(cli, ["embed", *model, "avis.jsonl"]))
    assert line.startswith("Error: TEXT 1 'avis.jsonl' looks like a file's name (no such file here); to read its "
                           "rows, pass -i avis.jsonl"), line
    line = usage_error(runner.invoke(cli, ["ner", *model, "reviews.csv"]))
    assert "to read its lines, pipe them: cli ner ... < reviews.csv" in line, line
    line = usage_error(runner.invoke(cli, ["classify", *model, "Bien.", "-"]))
    assert line.startswith("Error: TEXT 2 is '-', which reads stdin alone"), line
    trained = ["-m", str(tf_camembert_dir)]
    by_stdin = runner.invoke(cli, ["classify", *trained, "-"], input="Quel navet\nBien.\n")
    by_argument = runner.invoke(cli, ["classify", *trained, "Quel navet", "Bien."])
    assert by_stdin.exit_code == 0 and by_stdin.stdout == by_argument.stdout, by_stdin.output + by_argument.output
    # What the refusal offers for a text meant as written: stdin lines are not checked.
    written = runner.invoke(cli, ["classify", *trained], input="reviews.csv\n")
    assert written.exit_code == 0 and written.stdout.rstrip().endswith(" reviews.csv"), written.output


def test_text_that_is_not_utf8_is_named_by_argument_and_line(tmp_path, monkeypatch):
    """Bytes that are not UTF-8 reach Python's argv as lone surrogates (surrogateescape): the error names the
    argument or stdin line and the byte, not a surrogate nobody typed, and comes before the model loads."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    runner = CliRunner()
    model = ["-m", str(tmp_path / "no-such-model")]
    assert_one_line_error(runner.invoke(cli, ["classify", *model, "Bien", "Tr\udce8s bon"]),
                          "TEXT argument 2 is not valid UTF-8 (byte 0xe8 at character 3)")
    assert_one_line_error(runner.invoke(cli, ["explain", *model], input=b"Bien\nTr\xe8s bon\n"),
                          "stdin line 2 is not valid UTF-8 (byte 0xe8 at byte 3 of the line)")


def test_bytes_that_are_not_utf8_on_a_real_command_line(tmp_path):
    """The same through a real process: argv bytes as a Latin-1 terminal sends them."""
    env = {**os.environ, "LC_ALL": "C.UTF-8", "HF_HUB_OFFLINE": "1"}
    env.pop("COULISSE_MODEL", None)
    args = [os.fsencode(a) for a in coulisse_command()] + [b"classify", b"-m", os.fsencode(tmp_path / "none"),
                                                           b"Tr\xe8s bon"]
    result = subprocess.run(args, capture_output=True, env=env, timeout=120)
    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "TEXT argument 1 is not valid UTF-8 (byte 0xe8 at character 3)" in lines[0]


def test_a_task_head_the_checkpoint_lacks_is_said_as_such():
    """A sequence classifier asked for token labels: its classifier.dense.* tensors share the token head's
    prefix, and the error still says which head is missing and what the checkpoint is, not a broken file."""
    result = CliRunner().invoke(cli, ["ner", "-m", "coulisse/mini-allocine", "Jean est à Paris."])
    assert_one_line_error(result, "MissingHeadError", "has no token-classification head",
                          "CamembertForSequenceClassification",
                          "use `coulisse classify -m ...` or `coulisse embed -m ...`")  # commands, not tasks
    assert "does not match its config.json" not in result.output


@pytest.mark.parametrize(("args", "near"), [
    (["explain", "--task", "sentiment", "x"], "sentiment-analysis"),
    (["classify", "--long-text", "chunks", "x"], "chunk"),
    (["serve", "--dtype", "bf16"], "bfloat16"),
    (["serve", "--task", "sentiment"], "text-classification"),  # pipeline()'s alias, suggested as served
])
def test_a_choice_mistyped_names_the_closest(args, near):
    """pipeline("sentiment") says "did you mean"; the command line's choices only listed them (audit 46)."""
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and f"(did you mean {near!r}?)" in result.output, result.output


def test_a_missing_head_names_the_way_out_in_the_commands_words(factory):
    """The library's "use task 'feature-extraction'" was said by `classify`, which takes no task (audit 46):
    commands without --task name the command to run, those with one name --task."""
    base = str(factory.checkpoint("bert", base=True))
    result = CliRunner().invoke(cli, ["classify", "-m", base, "Un film."])
    assert_one_line_error(result, "MissingHeadError", "use `coulisse embed -m ...`, or a checkpoint fine-tuned")
    result = CliRunner().invoke(cli, ["explain", "-m", base, "--attributions", "Un film."])
    assert_one_line_error(result, "MissingHeadError", "use --task feature-extraction, or a checkpoint fine-tuned")
    # serve loads on its torch thread, where click's context is not (the session review): named all the same
    result = CliRunner().invoke(cli, ["serve", "-m", base, "--task", "text-classification", "--port", "0"])
    assert result.exit_code == 1 and "use --task feature-extraction, or a checkpoint" in result.stderr, result.output


def test_explain_a_base_model_stops_after_the_encoder(factory):
    directory = factory.checkpoint("bert", base=True)
    args = ["explain", "--task", "feature-extraction", "-m", str(directory), "Bof."]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    ids = factory.hf_tokenizer("bert")("Bof.")["input_ids"]
    assert f"input_ids      {ids}" in result.stdout
    assert "last_hidden_state shape: (batch=1, sequence=" + str(len(ids)) in result.stdout
    assert "3. Head" not in result.stdout


def test_verbose_counts_before_or_after_the_command():
    """`coulisse classify -v` as `coulisse -v classify`: what is loaded is logged; without it, only the answer."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("COULISSE_MODEL", None)
    runs = {}
    for args in (["classify", "-v"], ["-v", "classify"], ["classify"], ["classify", "-vv"]):
        result = run_cli([*args, "-m", "coulisse/mini-allocine", "Super film !"], env)
        assert result.returncode == 0 and result.stdout.startswith("POSITIVE"), result.stderr
        runs[" ".join(args)] = result.stderr
    assert "INFO coulisse.models.model: loaded camembert" in runs["classify -v"]
    assert "INFO coulisse.models.model: loaded camembert" in runs["-v classify"]
    assert runs["classify"] == "" and "DEBUG" not in runs["classify -v"] and "DEBUG" in runs["classify -vv"]


def test_output_to_a_file_in_a_code_page_is_written_in_utf8(offline_env):
    """Windows gives a redirected stdout its ANSI code page, strict: `explain > out.txt` died on SentencePiece's
    "▁" (UnicodeEncodeError), on every CamemBERT text. Emulated here by that stream; the command writes UTF-8."""
    env = {k: v for k, v in offline_env.items() if k != "PYTHONIOENCODING"}
    code = ("import io, sys\n"
            "sys.stdout = io.TextIOWrapper(sys.stdout.buffer, encoding='cp1252', errors='strict')\n"
            "from coulisse.interfaces.cli import main\n"
            "sys.argv = ['coulisse', 'explain', '-m', 'coulisse/mini-allocine', 'Un film génial 😍']\n"
            "main()\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    out = done.stdout.decode("utf-8")
    assert "▁Un" in out and "'😍'" in out  # the <unk>'s note quotes the emoji


def test_utf8_streams_leaves_terminals_utf8_and_an_asked_encoding_alone():
    import io

    from coulisse.interfaces.cli import utf8_streams

    def stream(encoding: str, tty: bool = False) -> io.TextIOWrapper:
        s = io.TextIOWrapper(io.BytesIO(), encoding=encoding)
        s.isatty = lambda: tty
        return s

    piped, terminal, utf8 = stream("cp1252"), stream("cp1252", tty=True), stream("utf-8")
    utf8_streams([piped, terminal, utf8], environ={})
    assert (piped.encoding, terminal.encoding, utf8.encoding) == ("utf-8", "cp1252", "utf-8")
    asked = stream("cp1252")
    utf8_streams([asked], environ={"PYTHONIOENCODING": "cp1252"})
    assert asked.encoding == "cp1252"
    captured = io.StringIO()  # contextlib.redirect_stdout's: encoding None, left as it is (a TypeError was raised)
    utf8_streams([captured, None], environ={})
    assert captured.encoding is None


def test_a_signal_while_the_interpreter_shuts_down_ends_it_quietly(offline_env):
    """A second Ctrl-C after a job's "interrupted: ... rerun with --resume" line, while Python joined its
    threads, printed a KeyboardInterrupt traceback under it (audit 44): once the command is done, a signal ends
    the process at once with the signal's status."""
    code = ("import os, signal, sys, time\nfrom coulisse.interfaces.cli import main\n"
            "sys.argv = ['coulisse', '--version']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "os.kill(os.getpid(), signal.SIGINT)\ntime.sleep(30)\nprint('not ended')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=offline_env, timeout=60)
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr and "not ended" not in done.stdout and "coulisse" in done.stdout


@pytest.mark.parametrize(("argv", "long"), [(["serve", "-k", "secret"], "--api-key"),
                                            (["ner", "-i", "O", "Paris"], "--ignore-labels")])
def test_a_removed_short_option_names_the_long_one(argv, long):
    """An older script's `serve -k KEY` (the short options that meant another thing than elsewhere are gone):
    the usage error says which option it was (audit 48: click's bare "No such option")."""
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2
    assert f"No such option '{argv[1]}'. It was {long} in `coulisse {argv[0]}`" in result.output
    assert f"write {long}." in result.output
