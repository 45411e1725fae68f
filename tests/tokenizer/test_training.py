"""coulisse's tokenizer where the course goes next (chapter 3, fine-tuning): `datasets.map`, a padding collator
and `transformers.Trainer`, side by side with transformers' tokenizer of the same folder (the bundled
CamemBERT-family classifier). Trainer picks its padding collator only for transformers' own tokenizer classes, so
the collator is passed, as docs/dropin.md says."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")
pytest.importorskip("accelerate")  # Trainer needs it

from coulisse.tokenizer import Tokenizer  # noqa: E402

MODEL = Path(__file__).resolve().parents[2] / "src" / "coulisse" / "bundled" / "mini-allocine"
REVIEWS = ["Un film magnifique, des acteurs formidables.", "Quel navet, je me suis ennuyé du début à la fin.",
           "Bof.", "Une histoire touchante et une musique superbe, je recommande vivement ce film à tous."]


def test_one_training_step_with_coulisse_tokenizer_equals_transformers(tmp_path):
    torch.manual_seed(0)
    losses, saved = {}, {}
    for name, tokenizer in (("coulisse", Tokenizer.from_dir(MODEL)),
                            ("transformers", transformers.AutoTokenizer.from_pretrained(MODEL))):
        data = datasets.Dataset.from_dict({"text": REVIEWS, "label": [1, 0, 0, 1]})
        data = data.map(lambda batch, t=tokenizer: t(batch["text"], truncation=True), batched=True)
        data = data.remove_columns(["text"])
        torch.manual_seed(0)
        model = transformers.AutoModelForSequenceClassification.from_pretrained(MODEL)
        args = transformers.TrainingArguments(output_dir=str(tmp_path / name), per_device_train_batch_size=4,
                                              max_steps=1, report_to=[], use_cpu=True, save_strategy="no",
                                              logging_strategy="no", seed=0, data_seed=0)
        trainer = transformers.Trainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                                       data_collator=transformers.DataCollatorWithPadding(tokenizer))
        losses[name] = trainer.train().training_loss
        trainer.save_model(str(tmp_path / name / "saved"))
        saved[name] = transformers.AutoTokenizer.from_pretrained(tmp_path / name / "saved")
    assert losses["coulisse"] == pytest.approx(losses["transformers"], rel=1e-6)  # same batch, same step
    assert saved["coulisse"](REVIEWS)["input_ids"] == saved["transformers"](REVIEWS)["input_ids"]
