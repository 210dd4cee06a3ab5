"""Built-in demo datasets that need no files and no network: ``demo:digits``, ``demo:sentences``.

(``demo:shapes`` lives in ``shapes.py``.) Both are deterministic, so their fingerprints are
plain content hashes computed once from data that is already in memory.
"""

from __future__ import annotations

from itertools import product
from typing import TYPE_CHECKING

import numpy as np

from engine.data.base import ContentHasher, DatasetBase, SkippedItem
from engine.errors import ItemError

if TYPE_CHECKING:
    import pandas as pd
    from PIL import Image

# Bump when rendering changes: it is part of the fingerprint, so old vectors are not reused.
DIGITS_VERSION = 1
SENTENCES_VERSION = 1
DIGIT_IMAGE_SIZE = 64


# -- demo:digits ------------------------------------------------------------------------------
class DigitsDataset(DatasetBase):
    """scikit-learn's 1,797 handwritten 8x8 digits as 64x64 RGB images, dark ink on white."""

    spec = "demo:digits"
    name = "digits"
    has_images = True
    texts = None

    def __init__(self) -> None:
        from sklearn.datasets import load_digits  # shipped with scikit-learn: no download

        bunch = load_digits()
        values = np.asarray(bunch.images, dtype=np.float64)  # (n, 8, 8), 0..16
        # Ink is dark on a light page, like a scanned form; 16 -> black, 0 -> white.
        self._pixels = np.rint(255.0 - values * (255.0 / 16.0)).astype(np.uint8)
        self._digits = np.asarray(bunch.target, dtype=np.int64)
        self.ids = [f"digits-{i:04d}" for i in range(len(self._digits))]
        self.labels = [str(int(d)) for d in self._digits]
        self.skipped: list[SkippedItem] = []
        h = ContentHasher(f"demo-digits-v{DIGITS_VERSION}")
        h.add(self._pixels.tobytes())
        h.add(self._digits.tobytes())
        self._fingerprint = h.hexdigest()

    def load_image(self, index: int) -> Image.Image:
        from PIL import Image

        self._check_index(index)
        scale = DIGIT_IMAGE_SIZE // 8
        # Nearest-neighbour upscale: each source pixel becomes a crisp 8x8 block.
        grey = np.kron(self._pixels[index], np.ones((scale, scale), dtype=np.uint8))
        return Image.fromarray(np.repeat(grey[:, :, None], 3, axis=2), "RGB")

    def _metadata_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({"digit": self._digits.copy()})

    def fingerprint(self) -> str:
        return self._fingerprint


# -- demo:sentences ---------------------------------------------------------------------------
# Each topic is subjects x predicates x endings, all written to belong to that topic, so any
# combination reads as a plausible sentence and stays on topic (what a text model should see).
_TOPICS: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "sports": (
        (
            "The striker",
            "The home team",
            "The rugby captain",
            "The veteran midfielder",
            "The visiting side",
            "The young winger",
            "Our goalkeeper",
            "The national squad",
        ),
        (
            "scored a late goal",
            "won the championship final",
            "trained hard before the match",
            "celebrated the victory with the fans",
            "lost the match on penalties",
            "was injured during the game",
            "signed a new contract with the club",
            "defended well against their rivals",
            "went top of the league table",
            "qualified for the playoffs",
        ),
        (
            "on Saturday",
            "in front of a packed stadium",
            "after a tough season",
            "in the second half",
            "in the cup tournament",
            "despite the referee's decisions",
        ),
    ),
    "cooking": (
        (
            "The head chef",
            "My grandmother",
            "The pastry cook",
            "Our neighbour",
            "The young baker",
            "The restaurant cook",
            "My uncle",
            "The food blogger",
        ),
        (
            "baked a loaf of sourdough bread",
            "simmered a pot of tomato soup",
            "chopped onions and garlic for the sauce",
            "roasted a chicken with rosemary",
            "whisked eggs and sugar for a cake",
            "seasoned the stew with salt and pepper",
            "fried crispy potatoes in olive oil",
            "kneaded dough for fresh pasta",
            "grilled vegetables for dinner",
            "tasted the curry and added more spice",
        ),
        (
            "in the kitchen",
            "for the family dinner",
            "before the guests arrived",
            "using an old recipe",
            "on a slow Sunday afternoon",
            "while the oven heated up",
        ),
    ),
    "weather": (
        (
            "The forecast",
            "The weather service",
            "The local meteorologist",
            "The morning weather report",
            "The storm warning",
            "The rain radar",
            "The evening weather bulletin",
            "The coastal weather station",
        ),
        (
            "predicted heavy rain and strong winds",
            "warned of thunderstorms",
            "showed snow falling across the hills",
            "reported a heatwave with record temperatures",
            "expected thick fog",
            "announced freezing temperatures overnight",
            "said a hurricane was approaching",
            "described sunny skies with a light breeze",
            "warned of flooding after the storm",
            "predicted hail and lightning",
        ),
        (
            "for the weekend",
            "across the northern region",
            "for tomorrow morning",
            "along the coast",
            "for the rest of the week",
            "after a humid, cloudy afternoon",
        ),
    ),
    "space": (
        (
            "The astronauts",
            "The space agency",
            "The mission team",
            "NASA scientists",
            "The astronomers",
            "A team of astrophysicists",
            "The European space programme",
            "The observatory staff",
        ),
        (
            "observed a distant galaxy",
            "launched a rocket into orbit",
            "photographed the rings of Saturn",
            "discovered a new exoplanet",
            "studied craters on Mars",
            "tracked a comet passing near the Sun",
            "measured radiation from a black hole",
            "planned a crewed mission to the Moon",
            "mapped the stars of the Milky Way",
            "searched for signs of life on other planets",
        ),
        (
            "last night",
            "with a new space telescope",
            "during the space mission",
            "from the launch site",
            "this year",
            "using data from a satellite",
        ),
    ),
    "music": (
        (
            "The pianist",
            "The rock band",
            "The orchestra",
            "The jazz singer",
            "Our choir",
            "The young guitarist",
            "The famous composer",
            "The drummer",
        ),
        (
            "performed a new song",
            "played a beautiful melody",
            "recorded an album in the studio",
            "rehearsed for the concert",
            "sang a slow ballad",
            "went on tour across the country",
            "composed music for a film",
            "played to a cheering crowd",
            "released a hit single",
            "practised scales and chords",
        ),
        (
            "last weekend",
            "at the music festival",
            "for the first time",
            "with great feeling and rhythm",
            "before the big concert",
            "to the delight of the fans",
        ),
    ),
    "finance": (
        (
            "The central bank",
            "Investors",
            "Financial analysts",
            "The hedge fund",
            "The pension fund",
            "Wall Street traders",
            "The finance minister",
            "The bank's economists",
        ),
        (
            "worried about inflation and interest rates",
            "sold shares after the stock market fell",
            "bought government bonds",
            "expected higher profits and dividends",
            "warned about rising debt",
            "invested heavily in the stock market",
            "cut the forecast for economic growth",
            "discussed the budget deficit",
            "watched the currency exchange rate",
            "predicted a recession",
        ),
        (
            "this quarter",
            "after the earnings report",
            "amid market volatility",
            "before the markets opened",
            "during the financial crisis",
            "as stock prices dropped",
        ),
    ),
    "animals": (
        (
            "The lion",
            "The elephants",
            "The wolf pack",
            "A young deer",
            "The brown bear",
            "The zebra herd",
            "The wild horses",
            "The tiger",
        ),
        (
            "roamed across the savanna",
            "drank water at the river",
            "slept in the shade of a tree",
            "hunted for prey",
            "watched over the young animals",
            "grazed on the tall grass",
            "hid from predators in the forest",
            "migrated to new feeding grounds",
            "called to the rest of the herd",
            "rested after a long chase",
        ),
        (
            "in the wildlife reserve",
            "at dawn",
            "near the watering hole",
            "in the national park",
            "during the dry season",
            "while the zookeeper watched",
        ),
    ),
    "technology": (
        (
            "The software engineers",
            "The startup",
            "The tech company",
            "The programmers",
            "The IT department",
            "The app developers",
            "The chip maker",
            "The computer science lab",
        ),
        (
            "released a new smartphone app",
            "fixed a bug in the operating system",
            "trained a machine learning model",
            "upgraded the computer servers",
            "launched a cloud computing platform",
            "improved the battery life of laptops",
            "patched a security vulnerability in the software",
            "wrote code for the website",
            "tested a new processor chip",
            "built an artificial intelligence chatbot",
        ),
        (
            "this week",
            "for millions of users",
            "after months of work",
            "with open-source tools",
            "at the tech conference",
            "ahead of the product launch",
        ),
    ),
}
SENTENCES_PER_TOPIC = 45
_STRIDE = 97  # coprime with 8*10*6 = 480: walks the combinations without repeats, well mixed


def demo_sentences() -> list[tuple[str, str]]:
    """(topic, sentence) pairs, topic by topic, always the same."""
    out: list[tuple[str, str]] = []
    for topic, (subjects, predicates, endings) in _TOPICS.items():
        combos = list(product(subjects, predicates, endings))
        for k in range(SENTENCES_PER_TOPIC):
            subject, predicate, ending = combos[(k * _STRIDE) % len(combos)]
            out.append((topic, f"{subject} {predicate} {ending}."))
    return out


class SentencesDataset(DatasetBase):
    """A few hundred short sentences in eight topics; label = topic. Text only."""

    spec = "demo:sentences"
    name = "sentences"
    has_images = False

    def __init__(self) -> None:
        pairs = demo_sentences()
        self.ids = [f"sentences-{i:04d}" for i in range(len(pairs))]
        self.labels = [topic for topic, _ in pairs]
        self.texts = [sentence for _, sentence in pairs]
        self.skipped: list[SkippedItem] = []
        h = ContentHasher(f"demo-sentences-v{SENTENCES_VERSION}")
        for row in zip(self.ids, self.labels, self.texts, strict=True):
            h.add_row(*row)
        self._fingerprint = h.hexdigest()

    def load_image(self, index: int) -> Image.Image:
        raise ItemError("demo:sentences has no images")

    def _metadata_frame(self) -> pd.DataFrame:
        import pandas as pd

        return pd.DataFrame({"words": [len(t.split()) for t in self.texts or []]})

    def fingerprint(self) -> str:
        return self._fingerprint
