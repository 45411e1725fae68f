"""coulisse evaluate: metrics equal scikit-learn's on the same predictions; labels; the report folder."""

from __future__ import annotations

import csv
import hashlib
import json
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import coulisse
from coulisse.errors import InputError
from coulisse.interfaces.cli import cli
from coulisse.interfaces.jobs.evaluate import MISSING, UNKNOWN, LabelMap, limit_and_sample, parse_label_map
from coulisse.interfaces.jobs.formats import Row
from coulisse.interfaces.jobs.metrics import compute

sklearn_metrics = pytest.importorskip("sklearn.metrics")
calibration_curve = pytest.importorskip("sklearn.calibration").calibration_curve

TEXTS = ["J'ai adoré ce film.", "Quel ennui.", "Une fin bâclée.", "Superbe photographie.", "Bof.",
         "Un chef-d'œuvre !", "À éviter.", "Les acteurs sont justes."]


@pytest.mark.parametrize(("classes", "seed"), [(2, 0), (3, 1), (5, 2)])
def test_metrics_equal_scikit_learn(classes, seed):
    rng = np.random.default_rng(seed)
    n = 500
    y_true = rng.integers(0, classes, n)
    y_pred = np.where(rng.random(n) < 0.7, y_true, rng.integers(0, classes, n))
    if classes > 2:
        y_pred[y_pred == classes - 1] = 0  # a label never predicted: zero_division matters
    confidence = rng.uniform(1 / classes, 1.0, n)
    confidence[:3] = [0.5, 0.7, 1.0]  # scores on bin edges
    labels = [f"L{k}" for k in range(classes)]
    m = compute(y_true, y_pred, confidence, labels, n_bins=10)
    ids = list(range(classes))
    assert m.accuracy == pytest.approx(sklearn_metrics.accuracy_score(y_true, y_pred))
    assert m.macro_f1 == pytest.approx(sklearn_metrics.f1_score(y_true, y_pred, labels=ids, average="macro",
                                                                zero_division=0))
    p, r, f, s = sklearn_metrics.precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    np.testing.assert_allclose(m.precision, p)
    np.testing.assert_allclose(m.recall, r)
    np.testing.assert_allclose(m.f1, f)
    np.testing.assert_array_equal(m.support, s)
    np.testing.assert_array_equal(m.confusion, sklearn_metrics.confusion_matrix(y_true, y_pred, labels=ids))
    correct = (y_true == y_pred).astype(int)
    prob_true, prob_pred = calibration_curve(correct, confidence, n_bins=10, strategy="uniform")
    full = [b for b in m.bins if b.count]
    np.testing.assert_allclose([b.accuracy for b in full], prob_true)
    np.testing.assert_allclose([b.confidence for b in full], prob_pred)
    assert sum(b.count for b in m.bins) == n


def test_label_map():
    labels = LabelMap({0: "NEGATIVE", 1: "POSITIVE"})
    assert [labels(v) for v in ["NEGATIVE", "positive", " POSITIVE ", "1", "0", 1, 0, 1.0, "1.0"]] == \
        [0, 1, 1, 1, 0, 1, 0, 1, 1]
    assert [labels(v) for v in [None, "", "  "]] == [MISSING] * 3
    assert [labels(v) for v in ["pos", 2, "-1", True, 0.5, [1]]] == [UNKNOWN] * 6


def test_label_map_aliases():
    """--label-map: the file's values as the model's labels (by name, any case, or id); the others as before."""
    labels = LabelMap({0: "NEGATIVE", 1: "POSITIVE"}, parse_label_map("positif=POSITIVE, négatif=negative,neutre=0"))
    assert [labels(v) for v in ["positif", " négatif ", "neutre", "POSITIVE", 0, "pos"]] == [1, 0, 0, 1, 0, UNKNOWN]
    with pytest.raises(InputError, match="the model has no label 'BON'; it knows NEGATIVE \\(id 0\\)"):
        LabelMap({0: "NEGATIVE", 1: "POSITIVE"}, {"bon": "BON"})
    for bad in ("positif", "positif=", "=POSITIVE", "a=POSITIVE,a=NEGATIVE"):
        with pytest.raises(InputError, match="--label-map"):
            parse_label_map(bad)


def test_limit_and_sample():
    rows = [Row({"i": i}) for i in range(100)]
    assert [r.values["i"] for r in limit_and_sample(iter(rows), 7, None, 0)] == list(range(7))
    picked = [r.values["i"] for r in limit_and_sample(iter(rows), None, 10, 3)]
    assert len(picked) == 10 == len(set(picked)) and picked == sorted(picked)
    assert picked == [r.values["i"] for r in limit_and_sample(iter(rows), None, 10, 3)]  # seeded
    assert picked != [r.values["i"] for r in limit_and_sample(iter(rows), None, 10, 4)]
    assert all(i < 50 for i in (r.values["i"] for r in limit_and_sample(iter(rows), 50, 10, 3)))


def _labelled_csv(path, n=40, label=lambda i: str(i % 2)):
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "source"])
        for i in range(n):
            w.writerow([TEXTS[i % len(TEXTS)] if i != 5 else "", label(i), f"s{i}"])


def test_evaluate_writes_a_report_that_matches_scikit_learn(tf_camembert_dir, tmp_path):
    source, report = tmp_path / "in.csv", tmp_path / "report"
    names = ["NEGATIVE", "POSITIVE", "1", "0"]
    _labelled_csv(source, label=lambda i: names[i % 4] if i != 7 else "")  # names and ids; one missing
    args = ["evaluate", "-m", str(tf_camembert_dir), "-i", str(source), "-o", str(report), "-b", "16"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in report.iterdir()) == [
        "confusion_matrix.png", "predictions.csv", "reliability.png", "report.md", "score_histogram.png"]
    for png in report.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    with open(report / "predictions.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["source"] for r in rows] == [f"s{i}" for i in range(40)]  # every row, in order
    assert list(rows[0]) == ["text", "label", "source", "predicted_label", "predicted_score", "error"]
    labels = LabelMap({0: "NEGATIVE", 1: "POSITIVE"})
    kept = [r for r in rows if not r["error"] and labels(r["label"]) >= 0]
    assert len(kept) == 38  # one empty text, one missing label
    y_true = [labels(r["label"]) for r in kept]
    y_pred = [labels(r["predicted_label"]) for r in kept]
    accuracy = sklearn_metrics.accuracy_score(y_true, y_pred)
    macro = sklearn_metrics.f1_score(y_true, y_pred, average="macro", labels=[0, 1], zero_division=0)
    text = (report / "report.md").read_text()
    assert f"| {accuracy:.4f} | {macro:.4f} |" in text
    assert "evaluated: **38**" in text and "Rows without a label: 1" in text
    assert "- Precision: exact (float32)\n" in text
    assert f"accuracy {accuracy:.4f}  macro-F1 {macro:.4f}" in result.stdout
    assert "trained on" not in text and "note:" not in result.stderr  # a model of the user's: no caveat
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 1 and "--overwrite" in again.output


def test_the_label_column_is_never_taken_for_the_text(tf_camembert_dir, tmp_path):
    """`avis,sentiment` with --label-column sentiment: the text is `avis`, the one other string column."""
    source = tmp_path / "in.csv"
    with open(source, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([["avis", "sentiment"]] + [[TEXTS[i], ("NEGATIVE", "POSITIVE")[i % 2]]
                                                           for i in range(6)])
    report = tmp_path / "r"
    result = CliRunner().invoke(cli, ["evaluate", "-m", str(tf_camembert_dir), "-i", str(source), "-o", str(report),
                                      "--label-column", "sentiment", "--no-plots"])
    assert result.exit_code == 0, result.output
    with open(report / "predictions.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    pipe = coulisse.pipeline("sentiment-analysis", model=str(tf_camembert_dir))
    assert [r["label"] for r in rows] == [p["label"] for p in pipe(TEXTS[:6])]
    assert "evaluated: **6**" in (report / "report.md").read_text()


def test_labels_that_do_not_match_stop_before_the_model_runs(tf_camembert_dir, tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t, "sentiment": random.choice(["pos", "neg"])}) + "\n"
                              for t in TEXTS))
    args = ["evaluate", "-m", str(tf_camembert_dir), "-i", str(source), "-o", str(tmp_path / "r")]
    result = CliRunner().invoke(cli, [*args, "--label-column", "sentiment"])
    assert result.exit_code == 1
    assert "do not match the model's: found 'pos'" in result.output or "found 'neg'" in result.output
    assert "NEGATIVE (id 0), POSITIVE (id 1)" in result.output
    assert not (tmp_path / "r" / "report.md").exists()
    result = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "s")])
    assert result.exit_code == 1 and "no label column 'label'" in result.output
    assert not (tmp_path / "s").exists()


def test_french_labels_are_evaluated_through_the_label_map(tf_camembert_dir, tmp_path):
    """A column of positif / négatif: refused with a --label-map to write, then evaluated through it exactly as
    the same file written with the model's names."""
    french, english = tmp_path / "fr.csv", tmp_path / "en.csv"
    _labelled_csv(french, label=lambda i: ["négatif", "positif"][i % 2])
    _labelled_csv(english, label=lambda i: ["NEGATIVE", "POSITIVE"][i % 2])
    args = ["evaluate", "-m", str(tf_camembert_dir), "--no-plots"]
    refused = CliRunner().invoke(cli, [*args, "-i", str(french), "-o", str(tmp_path / "r")])
    assert refused.exit_code == 1 and "--label-map " in refused.output
    mapped = CliRunner().invoke(cli, [*args, "-i", str(french), "-o", str(tmp_path / "fr"),
                                      "--label-map", "positif=POSITIVE,négatif=NEGATIVE"])
    plain = CliRunner().invoke(cli, [*args, "-i", str(english), "-o", str(tmp_path / "en")])
    assert mapped.exit_code == plain.exit_code == 0, mapped.output
    scores = [line for line in mapped.stdout.splitlines() if "accuracy" in line]
    assert scores and scores[0].split("->")[0] == [line for line in plain.stdout.splitlines()
                                                   if "accuracy" in line][0].split("->")[0]
    wrong = CliRunner().invoke(cli, [*args, "-i", str(french), "-o", str(tmp_path / "w"), "--label-map", "positif=BON"])
    assert wrong.exit_code == 1 and "the model has no label 'BON'" in wrong.output


def test_a_label_map_key_that_matches_no_label_is_refused_before_anything_is_classified(tf_camembert_dir, tmp_path):
    """`negatif` for `négatif`: the key matches no label of the file while `négatif` is left unmapped, so a whole
    class would drop out of the scores (the audit: macro-F1 0.5 on 26 of 40 rows, exit 0). Refused once the first
    chunk is read, before it is classified, naming the key, the file's labels and the closest one."""
    french = tmp_path / "fr.csv"
    _labelled_csv(french, label=lambda i: ["négatif", "positif"][i % 2])
    args = ["evaluate", "-m", str(tf_camembert_dir), "--no-plots", "-i", str(french), "-o", str(tmp_path / "r")]
    result = CliRunner().invoke(cli, [*args, "--label-map", "positif=POSITIVE,negatif=NEGATIVE"])
    assert result.exit_code == 1, result.output
    assert "--label-map key 'negatif' (did you mean 'négatif'?) matches no label in column 'label'" in result.stderr
    assert "whose labels are 'négatif' (20), 'positif' (20)." in result.stderr and "Traceback" not in result.output
    assert result.stdout == "" and not (tmp_path / "r" / "report.md").exists()
    with open(tmp_path / "r" / "predictions.csv", encoding="utf-8", newline="") as f:
        assert list(csv.DictReader(f)) == []  # nothing classified


def test_a_label_map_key_found_unused_after_the_run_fails_the_run(tf_camembert_dir, tmp_path):
    """A file sorted by label: its first chunk is all `positif`, so the typo shows only at the end. The report is
    written (it says which rows are out, and why), the command exits 1 with the key and the rows lost."""
    french = tmp_path / "fr.csv"
    _labelled_csv(french, n=24, label=lambda i: "positif" if i < 12 else "négatif")
    args = ["evaluate", "-m", str(tf_camembert_dir), "--no-plots", "-i", str(french), "-o", str(tmp_path / "r"),
            "-b", "4", "--label-map", "positif=POSITIVE,negatif=NEGATIVE"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: --label-map key 'negatif' (did you mean 'négatif'?)"), last
    assert "12 rows labelled 'négatif' were left out of the scores" in last and "--overwrite" in last
    assert "(1 could not be classified, 12 with a label --label-map does not map: 'négatif')" in result.stdout
    report = (tmp_path / "r" / "report.md").read_text(encoding="utf-8")
    assert "their label not mapped by `--label-map` (nor one of the model's): 12: négatif (12)" in report


def test_rows_a_label_map_leaves_out_are_blamed_on_the_map(tf_camembert_dir, tmp_path):
    """A map that covers `positif` only: the `négatif` rows are out because of the map, not the model, and named;
    a key for a label this file lacks (`neutre`) loses nothing: a warning, exit 0."""
    french = tmp_path / "fr.csv"
    _labelled_csv(french, n=12, label=lambda i: ["négatif", "positif"][i % 2])
    args = ["evaluate", "-m", str(tf_camembert_dir), "--no-plots", "--quiet", "-i", str(french)]
    result = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "a"), "--label-map", "positif=POSITIVE"])
    assert result.exit_code == 0, result.output
    assert "(1 could not be classified, 6 with a label --label-map does not map: 'négatif')" in result.stdout
    assert "the model does not know" not in result.stdout
    result = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "b"),
                                      "--label-map", "positif=POSITIVE,négatif=NEGATIVE,neutre=NEGATIVE"])
    assert result.exit_code == 0, result.output
    assert "warning: --label-map key 'neutre' matches no label in column 'label'" in result.stderr
    assert "No row was left out for it." in result.stderr


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, where no file can be created")
def test_an_output_dir_that_cannot_be_written_is_refused_before_the_model_is_looked_for(tmp_path):
    """-o /proc/x, and -o naming an existing file: one line each, naming the path given, before any model is
    looked for (a model that does not exist shows it). They were FileNotFoundError / FileExistsError."""
    source = tmp_path / "in.csv"
    _labelled_csv(source, n=4)
    args = ["evaluate", "-m", str(tmp_path / "no-model"), "-i", str(source), "--no-plots", "-o"]
    result = CliRunner().invoke(cli, [*args, "/proc/x"])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == ("Error: OutputError: cannot write in /proc (for --output-dir /proc/x): No such "
                                     "file or directory (ENOENT); write somewhere else.")
    result = CliRunner().invoke(cli, [*args, str(source)])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (f"Error: InputError: --output-dir {source} is a file; evaluate writes a folder "
                                     f"(report.md, plots, predictions): name a folder, e.g. {tmp_path / 'in'}-report/.")


def test_an_interrupted_evaluation_says_how_to_run_it_again(tf_camembert_dir, tmp_path, monkeypatch):
    """Ctrl-C during the run: exit 130 and a message that holds: the same command, without --overwrite (which
    the message used to ask for), runs the evaluation again and writes the report."""
    from coulisse.interfaces.jobs import evaluate as evaluate_module

    source = tmp_path / "in.csv"
    _labelled_csv(source, n=12)
    args = ["evaluate", "-m", str(tf_camembert_dir), "-i", str(source), "-o", str(tmp_path / "r"), "--no-plots",
            "--quiet", "-b", "4"]

    def stop(*_):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(evaluate_module, "_collect", stop)  # Ctrl-C once the first chunk is classified
        result = CliRunner().invoke(cli, args)
    assert result.exit_code == 130, result.output
    assert result.stderr.strip() == ("interrupted before the report was written; run the same command "
                                     "again to start the evaluation over.")
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert (tmp_path / "r" / "report.md").is_file()


def test_evaluate_limit_and_sample(tf_camembert_dir, tmp_path):
    source = tmp_path / "in.csv"
    _labelled_csv(source, n=60)
    base = ["evaluate", "-m", str(tf_camembert_dir), "-i", str(source), "--quiet"]
    result = CliRunner().invoke(cli, [*base, "-o", str(tmp_path / "a"), "--limit", "10"])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "a" / "predictions.csv").read_text().splitlines()) == 11
    assert "- Rows read: 10; selected: 10 " in (tmp_path / "a" / "report.md").read_text()  # --limit stops reading
    result = CliRunner().invoke(cli, [*base, "-o", str(tmp_path / "b"), "--sample", "12", "--seed", "7"])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "b" / "predictions.csv", encoding="utf-8", newline="") as f:
        picked = [int(r["source"][1:]) for r in csv.DictReader(f)]
    assert len(picked) == 12 and picked == sorted(picked)
    text = (tmp_path / "b" / "report.md").read_text()
    assert "a random sample of 12, seed 7" in text
    assert "- Rows read: 60; selected: 12 " in text  # the file's rows, then those the sample kept
    result = CliRunner().invoke(cli, [*base, "-o", str(tmp_path / "all"), "--sample", "500"])
    assert result.exit_code == 0, result.output
    # A sample larger than the file takes every row, and says so (it read "a random sample of 500").
    assert "selected: 60 (all of them: --sample 500 is more than there are)" in (
        tmp_path / "all" / "report.md").read_text()
    result = CliRunner().invoke(cli, [*base, "-o", str(tmp_path / "c"), "--limit", "10", "--quantize", "int8"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "c" / "report.md").read_text()
    assert "- Precision: int8 (the encoder's linear layers; float32 elsewhere)\n" in text


def _card_held_out(text: str) -> bool:
    """The bundled model card's split: held out when the first byte of the text's sha256 is divisible by 5."""
    return hashlib.sha256(text.encode("utf-8")).digest()[0] % 5 == 0


def test_the_shipped_training_digests_are_the_cards_training_reviews(allocine_texts):
    from coulisse.interfaces.jobs.evaluate import is_training, training_digests

    digests = training_digests()
    assert all(is_training(t, digests) != _card_held_out(t) for t in allocine_texts)
    assert len(digests) == len({t for t in allocine_texts if not _card_held_out(t)})


def test_the_bundled_model_is_evaluated_with_what_it_learnt_from_said(allocine_texts, tmp_path):
    """The bundled model learnt from 1,585 reviews of the public Allociné sample, which a learner may well
    evaluate it on (0.97 there, 0.86 held out): the report and the terminal say how many of the rows scored
    it learnt from, with the held-out figure; on held-out reviews (or any other text) they say nothing."""
    from coulisse.defaults import BUNDLED_ACCURACY, BUNDLED_MODEL

    texts = allocine_texts[:24]
    trained = sum(not _card_held_out(t) for t in texts)
    assert 0 < trained < len(texts)
    held = [t for t in allocine_texts if _card_held_out(t)][:24]
    for name, chosen in (("mixed", texts), ("held", held)):
        with open(tmp_path / f"{name}.csv", "w", encoding="utf-8", newline="") as f:
            out = csv.writer(f)
            out.writerow(["text", "label"])
            out.writerows([t, ["NEGATIVE", "POSITIVE"][i % 2]] for i, t in enumerate(chosen))
    args = ["evaluate", "-m", BUNDLED_MODEL, "--no-plots", "-i"]
    result = CliRunner().invoke(cli, [*args, str(tmp_path / "mixed.csv"), "-o", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    said = f"{trained} of the 24 rows evaluated are reviews {BUNDLED_MODEL} was trained on"
    assert f"> {said}" in (tmp_path / "a" / "report.md").read_text(encoding="utf-8")
    (note,) = [line for line in result.stderr.splitlines() if line.startswith("note: ")]
    assert said in note and f"held-out accuracy is {BUNDLED_ACCURACY:.1%}" in note
    result = CliRunner().invoke(cli, [*args, str(tmp_path / "held.csv"), "-o", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert "trained on" not in (tmp_path / "b" / "report.md").read_text(encoding="utf-8")
    assert "note:" not in result.stderr


def test_report_path_with_a_trailing_slash(tf_camembert_dir, tmp_path):
    source = tmp_path / "in.csv"
    _labelled_csv(source, n=12)
    args = ["evaluate", "-m", str(tf_camembert_dir), "-i", str(source), "-o", f"{tmp_path / 'report'}/",
            "--quiet"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    # _labelled_csv's row 5 has an empty text: the metrics cover the 11 others
    assert result.stdout.rstrip().endswith(f"on 11 of 12 rows (1 could not be classified) -> "
                                           f"{tmp_path / 'report' / 'report.md'}"), result.stdout


def test_missing_matplotlib_stops_before_the_model_loads(tmp_path, monkeypatch):
    """Plots asked for and matplotlib absent: one line with the fix, before any model is looked for."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails
    source = tmp_path / "in.csv"
    _labelled_csv(source, n=4)
    args = ["evaluate", "-m", str(tmp_path / "no-such-model"), "-i", str(source), "-o", str(tmp_path / "r")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert 'pip install "coulisse[jobs]"' in result.output and "--no-plots" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and "no-such-model" not in result.output
    assert not (tmp_path / "r").exists()


def test_missing_matplotlib_stops_before_the_default_model_is_looked_for(tmp_path, monkeypatch):
    """Without --model, the default model is resolved (the Hub, maybe, and a warning) only once the request holds."""
    import coulisse.hub_fallback

    def no_lookup(task):
        raise AssertionError("the default model was looked for")

    monkeypatch.setattr(coulisse.hub_fallback, "default_model", no_lookup)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.delenv("COULISSE_MODEL", raising=False)
    source = tmp_path / "in.csv"
    _labelled_csv(source, n=4)
    result = CliRunner().invoke(cli, ["evaluate", "-i", str(source), "-o", str(tmp_path / "r")])
    assert result.exit_code == 1 and "the plots need matplotlib" in result.output, result.output


def test_no_plots_writes_the_report_without_matplotlib(tf_camembert_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    source, report = tmp_path / "in.csv", tmp_path / "r"
    _labelled_csv(source, n=10)
    args = ["evaluate", "-m", str(tf_camembert_dir), "-i", str(source), "-o", str(report), "--no-plots"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in report.iterdir()) == ["predictions.csv", "report.md"]
    text = (report / "report.md").read_text()
    assert "## Calibration" in text and ".png" not in text


def test_report_md_shows_label_names_as_written(tf_camembert_dir, tmp_path):
    """Label names are text in report.md, not Markdown: `*bad*` is no emphasis and `a|b` no extra column, as
    a CommonMark + GFM-tables parser (markdown-it-py) reads the file."""
    markdown_it = pytest.importorskip("markdown_it")
    folder = tmp_path / "model"
    shutil.copytree(tf_camembert_dir, folder)
    names = ["*bad* <b>", "a|b `c` [x](y)"]
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["id2label"], config["label2id"] = {"0": names[0], "1": names[1]}, {names[0]: 0, names[1]: 1}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    source, report = tmp_path / "in.csv", tmp_path / "report"
    _labelled_csv(source, n=16, label=lambda i: names[i % 2] if i != 3 else "_odd_|one")
    result = CliRunner().invoke(cli, ["evaluate", "-m", str(folder), "-i", str(source), "-o", str(report),
                                      "--no-plots", "--quiet"])
    assert result.exit_code == 0, result.output
    tokens = markdown_it.MarkdownIt("commonmark").enable("table").parse((report / "report.md").read_text("utf-8"))

    def tables() -> list[list[list[str]]]:  # each table's rows, as the cells' plain text
        found, row = [], None
        for i, t in enumerate(tokens):
            if t.type == "table_open":
                found.append([])
            elif t.type == "tr_open":
                row = []
                found[-1].append(row)
            elif t.type in ("th_open", "td_open"):
                inline = tokens[i + 1]
                row.append("".join(c.content for c in inline.children if c.type in ("text", "code_inline")))
        return found

    per_label = next(t for t in tables() if t[0][0] == "label")
    assert [r[0] for r in per_label[1:]] == names and all(len(r) == 5 for r in per_label[1:])
    confusion = next(t for t in tables() if t[0][0] == "true \\ predicted")
    assert confusion[0][1:] == names and [r[0] for r in confusion[1:]] == names
    children = [c for t in tokens if t.type == "inline" for c in t.children]
    assert not [c for c in children if c.type in ("em_open", "html_inline")]  # `*bad*`, `<b>`: text
    assert [c.attrs["href"] for c in children if c.type == "link_open"] == ["predictions.csv"]  # not `[x](y)`
    listed = [t.content for t in tokens if t.type == "inline" and t.content.startswith("Rows left out")]
    plain = "".join(c.content for c in tokens[tokens.index(next(t for t in tokens if t.content == listed[0]))].children
                    if c.type == "text")
    assert "_odd_|one (1)" in plain


@pytest.mark.parametrize("n", [12, 30])
def test_the_histogram_tells_every_label_apart(n, tmp_path):
    """Past 8 labels every label's bars keep a colour and line style of their own, each named in a legend
    that lies beside the plot, not over its bars (matplotlib's own artists and extents)."""
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.colors as mcolors
    import matplotlib.pyplot as plt

    from coulisse.interfaces.jobs.plots import histogram_figure, score_histogram

    rng = np.random.default_rng(0)
    y_true = np.repeat(np.arange(n), 5)
    probs = rng.dirichlet(np.ones(n), len(y_true))
    labels = [f"L{k}" for k in range(n)]
    metrics = compute(y_true, probs.argmax(1), probs.max(1), labels, n_bins=10)
    fig = histogram_figure(plt, metrics, y_true, probs)
    ax = fig.axes[0]
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [f"true {label} (5)" for label in labels]
    outlines = [(mcolors.to_hex(h.get_edgecolor()), h.get_linestyle()) for h in legend.legend_handles]
    assert len(set(outlines)) == n, outlines
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    assert not legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))
    plt.close(fig)
    score_histogram(metrics, y_true, probs, tmp_path / "h.png")
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_input_that_is_a_folder_or_missing_is_said_so(tmp_path):
    """evaluate -i FOLDER and classify -i FOLDER said "cannot tell the format ... from its extension (none)";
    evaluate -i missing.txt said it "holds texts without labels". Each now says what is wrong with the path."""
    for command in ("evaluate", "classify"):
        result = CliRunner().invoke(cli, [command, "-m", str(tmp_path / "no-model"), "-i", str(tmp_path)])
        assert result.exit_code == 1, result.output
        assert result.stderr.startswith(f"Error: InputError: {tmp_path} is a folder; give a file in it"), result.stderr
    result = CliRunner().invoke(cli, ["evaluate", "-m", str(tmp_path / "no-model"), "-i", str(tmp_path / "ids.txt")])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == (f"Error: InputError: {tmp_path / 'ids.txt'} does not exist; give a labelled CSV, "
                                     "TSV, JSONL or Parquet file.")


@pytest.mark.parametrize("problem", ["regression", "one output", "multi_label_classification"])
def test_a_model_that_does_not_choose_one_label_is_refused(factory, tmp_path, problem):
    """A regression head was scored: rows labelled 0 read as its only label's id, accuracy 1.0 and an ECE of 3
    (scores outside [0, 1]); a multi-label one as if its independent scores chose one label (audit 43)."""
    options = {"num_labels": 1, "problem_type": None if problem == "one output" else "regression"} \
        if problem != "multi_label_classification" else {"num_labels": 2, "problem_type": problem}
    source = tmp_path / "in.csv"
    _labelled_csv(source, n=6)
    result = CliRunner().invoke(cli, ["evaluate", "-m", str(factory.checkpoint("bert", **options)), "-i",
                                      str(source), "-o", str(tmp_path / "report"), "--no-plots"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    said = result.output.strip().splitlines()[-1]
    assert ("a score, not a choice among labels" if problem != "multi_label_classification"
            else "is a multi-label classifier") in said, said
    assert not (tmp_path / "report" / "report.md").exists()


def test_calibration_bins_are_printed_to_their_width(tf_camembert_dir, tmp_path):
    """--bins 20 printed its bounds to one decimal: (0.6, 0.6], (0.7, 0.7] (audit 43)."""
    source, report = tmp_path / "in.csv", tmp_path / "report"
    _labelled_csv(source)
    args = ["evaluate", "-m", str(tf_camembert_dir), "-i", str(source), "-o", str(report), "--no-plots", "--bins",
            "20"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    rows = [line for line in (report / "report.md").read_text().splitlines() if line.startswith("| [") or
            line.startswith("| (")]
    bounds = [row.split("|")[1].strip() for row in rows]
    assert bounds and all(b.count(",") == 1 for b in bounds)
    pairs = [tuple(float(x) for x in b.strip("[(]").split(", ")) for b in bounds]
    assert all(abs(high - low - 0.05) < 1e-9 for low, high in pairs), bounds  # each bin's own width, 1/20
