"""The benchmark's texts: a seeded sample of real Allociné reviews, or French sentences shipped here.

The reviews live in `../shared/data/allocine-sample/train.csv` next to the repository (never copied into
it); when that file is absent the benchmark falls back on FALLBACK below, written for this project.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ALLOCINE = REPO.parent / "shared" / "data" / "allocine-sample" / "train.csv"
SHORT_SENTENCE = "Je déteste tellement ça !"

FALLBACK = [
    "J'ai adoré ce film, du début à la fin.",
    "Quel ennui... je me suis endormi avant la moitié.",
    "Les acteurs sont justes, la mise en scène est élégante et la musique accompagne parfaitement "
    "l'histoire.",
    "Un scénario sans queue ni tête, des dialogues creux et une fin bâclée : à éviter.",
    "Je déteste tellement ça !",
    "Une comédie légère qui fait du bien, parfaite pour un dimanche soir en famille.",
    "La photographie est superbe, mais le rythme est beaucoup trop lent pour captiver le spectateur.",
    "Franchement décevant, surtout après les excellentes critiques que j'avais lues.",
    "Un chef-d'œuvre ! Je suis sorti de la salle bouleversé et je n'ai pensé qu'à ça pendant des jours.",
    "Bof.",
    "C'est long, c'est lourd, et l'humour tombe à plat presque à chaque scène.",
    "L'actrice principale porte le film sur ses épaules avec une justesse remarquable.",
    "Les effets spéciaux ont mal vieilli, mais l'histoire reste touchante et sincère.",
    "Je ne comprends pas l'engouement autour de ce film : tout y est prévisible.",
    "Une belle surprise, drôle et intelligente, que je recommande sans hésiter.",
    "Le réalisateur signe ici son meilleur film, maîtrisé de bout en bout.",
    "Deux heures de ma vie que je ne récupérerai jamais.",
    "Le début est prometteur, puis le film s'essouffle et se perd dans des intrigues secondaires inutiles.",
    "Une bande originale magnifique et des paysages à couper le souffle.",
    "Les personnages sont caricaturaux et les situations invraisemblables.",
    "J'ai ri, j'ai pleuré, j'ai tout aimé. Merci pour ce moment.",
    "Trop de violence gratuite, je n'ai pas réussi à m'attacher aux personnages.",
    "Un thriller haletant, avec un rebondissement final que je n'avais pas vu venir.",
    "Le doublage français est raté et gâche une bonne partie du plaisir.",
    "Simple, efficace, émouvant : tout ce qu'on attend d'un bon drame.",
    "La suite n'arrive pas à la cheville du premier épisode, hélas.",
    "Une adaptation fidèle du roman, qui en respecte l'esprit comme la lettre.",
    "On s'ennuie ferme malgré un casting prestigieux.",
    "Ce documentaire m'a ouvert les yeux sur un sujet que je connaissais mal ; passionnant.",
    "Le film d'animation le plus inventif que j'aie vu depuis des années, petits et grands y trouveront leur "
    "compte.",
    "Mauvais jeu d'acteurs, scénario cousu de fil blanc, réalisation paresseuse : rien à sauver.",
    "Une œuvre exigeante, parfois austère, mais qui récompense la patience du spectateur.",
    "Je m'attendais à mieux de la part de ce réalisateur, dont j'avais adoré les précédents films. Ici, "
    "tout sonne faux : les dialogues, les décors, jusqu'à la lumière, et la dernière demi-heure n'en "
    "finit pas.",
    "Pas mal du tout, même si la fin m'a laissé un peu sur ma faim.",
    "Un film culte, à voir et à revoir.",
    "La tension monte progressivement jusqu'à un final éblouissant ; une vraie leçon de mise en scène.",
    "Ni bon ni mauvais, un divertissement vite oublié.",
    "Ce film est une insulte à l'intelligence du public.",
    "Une histoire d'amour bouleversante, portée par deux acteurs d'une grande sensibilité. Chaque regard, "
    "chaque silence compte, et l'on ressort de la salle avec l'envie de revoir le film aussitôt.",
    "Les enfants ont adoré, les parents un peu moins.",
    "Quelle déception ! Une bande-annonce trompeuse pour un film vide.",
    "Un polar nerveux et bien écrit, qui ne relâche jamais la pression.",
]


def read_allocine(path: Path = ALLOCINE) -> list[tuple[str, int]]:
    """(text, label) rows of the Allociné sample; label 1 = positive."""
    with path.open(encoding="utf-8", newline="") as f:
        return [(row["text"], int(row["label"])) for row in csv.DictReader(f)]


def load_texts(n: int = 160, seed: int = 0, path: Path = ALLOCINE) -> tuple[list[str], str]:
    """n texts (a fixed seeded sample) and where they come from."""
    if path.is_file():
        texts = [text for text, _ in read_allocine(path)]
        source = f"Allociné sample ({path})"
    else:
        texts = list(FALLBACK)
        source = "bench/bench_texts.py FALLBACK (French sentences; the Allociné sample is absent)"
    if n < len(texts):
        texts = random.Random(seed).sample(texts, n)
    elif n > len(texts):
        texts = (texts * (n // len(texts) + 1))[:n]
        source += f", repeated to {n}"
    return texts, source
