"""Deterministic pseudo names (artists, titles, albums) and lyrics text.

Names deliberately carry what real Last.fm data carries: quotes, apostrophes, accents, CJK and
Cyrillic, odd punctuation. They never contain a tab, CR/LF or another Unicode line separator
(so a line-oriented TSV stays line-oriented), and never leading/trailing whitespace.
"""

from __future__ import annotations

import random
import re

# LRCLIB's normalization: the lyrics library owns it, and the dump is written with the same function
from musicrec.lyrics.normalize import lay, lrclib_lower  # noqa: F401


def match_key(text: str) -> str:
    """A lenient identity key (``&`` == ``and``, no punctuation/accents/case): names of distinct
    catalog entries never share one, so every planted LRCLIB misspelling still points at one track."""
    return lrclib_lower(text.replace("&", " and ").replace("+", " and "))


# --- vocabularies -----------------------------------------------------------------------------
THEMES: dict[str, dict[str, list[str]]] = {
    "ocean": {"n": ["sea", "tide", "harbor", "wave", "shore", "sailor", "anchor", "lighthouse", "salt", "storm",
                    "current", "island"], "v": ["drift", "sail", "drown", "float", "crash"],
              "a": ["blue", "deep", "salty", "endless", "restless"]},
    "city": {"n": ["street", "neon", "subway", "taxi", "skyline", "alley", "siren", "rooftop", "traffic",
                   "concrete", "corner", "downtown"], "v": ["run", "hustle", "wander", "shine", "ride"],
             "a": ["electric", "crowded", "sleepless", "grey", "loud"]},
    "fire": {"n": ["fire", "flame", "ash", "smoke", "ember", "war", "blade", "iron", "thunder", "battle",
                   "throne", "blood"], "v": ["burn", "fight", "rage", "strike", "rise"],
             "a": ["burning", "fierce", "molten", "savage", "red"]},
    "love": {"n": ["heart", "kiss", "darling", "lover", "rose", "promise", "honey", "embrace", "valentine",
                   "wedding", "sweetheart", "arms"], "v": ["love", "hold", "want", "miss", "touch"],
             "a": ["sweet", "tender", "true", "gentle", "warm"]},
    "road": {"n": ["highway", "road", "engine", "mile", "dust", "motel", "border", "wheel", "station",
                   "train", "ticket", "horizon"], "v": ["drive", "roll", "leave", "travel", "follow"],
             "a": ["lonesome", "long", "dusty", "open", "western"]},
    "rain": {"n": ["rain", "tears", "window", "cloud", "sorrow", "umbrella", "grave", "letter", "goodbye",
                   "shadow", "silence", "puddle"], "v": ["cry", "fall", "fade", "weep", "forget"],
             "a": ["cold", "grey", "broken", "empty", "lonely"]},
    "party": {"n": ["party", "dancefloor", "bass", "beat", "disco", "weekend", "drink", "lights", "club",
                    "groove", "speaker", "crowd"], "v": ["dance", "jump", "shake", "move", "celebrate"],
              "a": ["wild", "funky", "crazy", "loud", "golden"]},
    "space": {"n": ["star", "moon", "planet", "galaxy", "rocket", "orbit", "comet", "satellite", "astronaut",
                    "nebula", "cosmos", "eclipse"], "v": ["fly", "launch", "glow", "orbit", "float"],
              "a": ["cosmic", "distant", "silver", "infinite", "weightless"]},
    "forest": {"n": ["forest", "river", "mountain", "wolf", "pine", "meadow", "valley", "fox", "moss",
                     "stone", "creek", "raven"], "v": ["grow", "howl", "climb", "wander", "breathe"],
               "a": ["green", "wild", "ancient", "quiet", "misty"]},
    "winter": {"n": ["snow", "winter", "frost", "ice", "fireplace", "december", "sleigh", "blizzard", "candle",
                     "chimney", "glacier", "north"], "v": ["freeze", "shiver", "wait", "melt", "whisper"],
               "a": ["frozen", "white", "bitter", "silent", "pale"]},
    "street": {"n": ["money", "hustle", "block", "chain", "cash", "crew", "corner", "gold", "hood", "deal",
                     "boss", "game"], "v": ["grind", "flex", "stack", "roll", "ball"],
               "a": ["rich", "fresh", "real", "hard", "fast"]},
    "faith": {"n": ["church", "prayer", "angel", "heaven", "grace", "soul", "glory", "sinner", "choir",
                    "miracle", "saviour", "hymn"], "v": ["pray", "believe", "sing", "forgive", "kneel"],
              "a": ["holy", "blessed", "humble", "eternal", "righteous"]},
    "machine": {"n": ["machine", "circuit", "robot", "signal", "wire", "code", "laser", "android", "pixel",
                      "static", "network", "engine"], "v": ["compute", "glitch", "scan", "transmit", "reboot"],
                "a": ["digital", "synthetic", "binary", "chrome", "automatic"]},
    "ghost": {"n": ["ghost", "grave", "raven", "midnight", "coffin", "spirit", "crypt", "candle", "curse",
                    "witch", "bones", "mirror"], "v": ["haunt", "scream", "vanish", "bleed", "creep"],
              "a": ["dark", "hollow", "wicked", "cursed", "dead"]},
    "summer": {"n": ["summer", "sun", "beach", "sunset", "palm", "surf", "lemonade", "july", "sand",
                     "holiday", "breeze", "waves"], "v": ["shine", "swim", "smile", "relax", "chill"],
               "a": ["sunny", "golden", "lazy", "bright", "hot"]},
    "memory": {"n": ["memory", "photograph", "childhood", "clock", "yesterday", "letter", "hometown", "school",
                     "diary", "echo", "years", "summerhouse"], "v": ["remember", "return", "wonder", "keep",
                                                                     "grow"],
               "a": ["old", "faded", "young", "familiar", "lost"]},
}
THEME_NAMES = sorted(THEMES)
GENERIC = {
    "pron": ["I", "you", "we", "they", "she", "he"],
    "det": ["the", "my", "your", "our", "this", "every"],
    "prep": ["in", "on", "under", "through", "across", "beyond", "into", "after"],
    "adv": ["tonight", "again", "forever", "slowly", "alone", "away", "now", "together"],
    "n": ["night", "day", "time", "light", "world", "dream", "home", "life", "fire", "eyes", "hands", "door"],
    "v": ["wait", "call", "feel", "know", "see", "say", "need", "turn"],
    "a": ["new", "last", "little", "strange", "beautiful", "lonely", "better", "only"],
}
FIRST_NAMES = ["Anna", "José", "Søren", "Mika", "Zoë", "Björn", "Chloé", "Kenji", "Olga", "Ngozi", "Liam",
               "Priya", "Aurélie", "Dmitri", "Lucía", "Håkon", "Yuki", "Marco", "Siobhán", "Tomás", "Ingrid",
               "Ahmed", "Jean-Luc", "Małgorzata", "Rafael", "Nina", "Otto", "Fatou", "Emil", "Camille"]
SYLLABLES = ["ka", "lo", "mi", "ra", "ven", "tor", "el", "an", "sha", "dor", "bel", "qu", "ix", "um", "ae",
             "ro", "ne", "sil", "var", "po", "zen", "tha", "gri", "mo", "lu", "fen", "dra", "os", "bri", "cal",
             "jo", "ny", "vek", "sa", "rin", "gal", "te", "mur", "ki", "hal"]
ACCENTED = ["Café", "Niño", "Über", "Señor", "Fiancée", "Déjà Vu", "Garçon", "Mañana", "Naïve", "Crème",
            "Résumé", "Jalapeño", "Ærø", "Smörgås", "Été", "Coração", "Saudade", "Fräulein", "Città", "Ölmez"]
NON_LATIN = ["東京", "夜明け", "さくら", "夢の中", "月光", "사랑", "바다", "Ночь", "Звезда", "Москва", "Весна",
             "Кино", "Αγάπη", "Θάλασσα", "花火", "星空", "Любовь", "青い鳥"]
SUFFIXES = [" (Live)", " (Remix)", " [Demo]", " (Acoustic Version)", " - Remastered", " (Radio Edit)",
            " (Part 2)", " (Instrumental Mix)", " (Extended)", " [Bonus Track]"]
PLACES = ["Budokan", "Wembley", "the Roxy", "Montreux", "Red Rocks", "the Apollo", "Reykjavík", "São Paulo"]
COUNTRIES = ["United States", "United Kingdom", "Germany", "Japan", "Brazil", "Sweden", "Poland", "Finland",
             "Canada", "Russian Federation", "Spain", "France", "Netherlands", "Italy", "Mexico", "Norway",
             "Australia", "Côte D'Ivoire", "Turkey", "Chile", "Korea, Republic of", "Iceland", "Argentina"]
# Titles that end in a credit would collide with the planted " (feat. X)" misspellings.
FEAT = re.compile(r"\bfeat\b|\bft\b", re.IGNORECASE)


def theme_for_cluster(cluster: int) -> dict[str, list[str]]:
    """Cluster k's vocabulary: one theme, plus a second one mixed in once clusters outnumber themes."""
    n = len(THEME_NAMES)
    first = THEMES[THEME_NAMES[cluster % n]]
    if cluster < n:
        return first
    j = (cluster * 7 + cluster // n) % n
    second = THEMES[THEME_NAMES[(j + 1) % n if j == cluster % n else j]]
    return {k: first[k] + second[k][: len(second[k]) // 2] for k in first}


def _cap(word: str) -> str:
    return word[:1].upper() + word[1:]


def pseudo_word(rnd: random.Random, lo: int = 2, hi: int = 3) -> str:
    return "".join([_pick(rnd, SYLLABLES) for _ in range(lo + int(rnd.random() * (hi - lo + 1)))])


def _pick(rnd: random.Random, seq: list[str] | str) -> str:
    # random.choice costs 3x this; names are drawn a few million times for lastfm1k
    return seq[int(rnd.random() * len(seq))]


def _words(rnd: random.Random, theme: dict[str, list[str]], k: int) -> list[str]:
    out = []
    for _ in range(k):
        pool = theme if rnd.random() < 0.6 else GENERIC
        out.append(_pick(rnd, pool[_pick(rnd, "nnnav")]))
    return out


def artist_name(rnd: random.Random, theme: dict[str, list[str]]) -> str:
    r = rnd.random()
    noun = _cap(rnd.choice(theme["n"] + GENERIC["n"]))
    adj = _cap(rnd.choice(theme["a"] + GENERIC["a"]))
    nouns = noun if noun.endswith("s") else noun + "s"
    if r < 0.20:
        return f"The {adj} {nouns}" if rnd.random() < 0.5 else f"The {_cap(pseudo_word(rnd))} {nouns}"
    if r < 0.45:
        return f"{rnd.choice(FIRST_NAMES)} {_cap(pseudo_word(rnd, 2, 4))}"
    if r < 0.55:
        return _cap(pseudo_word(rnd, 2, 4))
    if r < 0.63:
        return f"{rnd.choice(FIRST_NAMES)} & the {_cap(pseudo_word(rnd))}s"
    if r < 0.67:
        return f"{noun} and {_cap(rnd.choice(GENERIC['n']))}"
    if r < 0.72:
        return f"{rnd.choice(['DJ', 'MC', 'Lil', 'Dr.'])} {_cap(pseudo_word(rnd))}"
    if r < 0.78:
        return rnd.choice(NON_LATIN) + rnd.choice(NON_LATIN) if rnd.random() < 0.5 else rnd.choice(NON_LATIN) + \
            f" {_cap(pseudo_word(rnd))}"
    if r < 0.84:
        w = _cap(pseudo_word(rnd))
        return rnd.choice([f"{w}!", f"{w} + {noun}", f"{w}/{noun}", w.lower(), w.upper(), f"{w}'s {noun}",
                           f'"{w}"', f"{w}.{rnd.randint(1, 99)}", f"{w} ({noun})"])
    if r < 0.90:
        return f"{rnd.choice(ACCENTED)} {_cap(pseudo_word(rnd))}"
    return f"{adj} {noun}"


def track_title(rnd: random.Random, theme: dict[str, list[str]]) -> str:
    r = rnd.random()
    words = [w[:1].upper() + w[1:] for w in _words(rnd, theme, (1, 2, 2, 3, 3, 4)[int(rnd.random() * 6)])]
    base = " ".join(words)
    if r < 0.45:
        return base
    if r < 0.53:
        return rnd.choice([f"Don't {_cap(rnd.choice(theme['v']))}", f"I'm {_cap(rnd.choice(theme['a']))}",
                           f"{words[0]}'s {_cap(rnd.choice(theme['n']))}", f"Rock 'n' Roll {words[-1]}",
                           f"Can't {_cap(rnd.choice(GENERIC['v']))} {words[-1]}", f"O'{words[0]}"])
    if r < 0.58:
        return f'"{base}"' if rnd.random() < 0.5 else f'{words[0]} "{_cap(rnd.choice(theme["n"]))}"'
    if r < 0.68:
        return base + rnd.choice(SUFFIXES)
    if r < 0.75:
        return f"{rnd.choice(ACCENTED)} {base}" if rnd.random() < 0.6 else rnd.choice(ACCENTED)
    if r < 0.80:
        return rnd.choice(NON_LATIN) if rnd.random() < 0.4 else f"{rnd.choice(NON_LATIN)} ({base})"
    if r < 0.87:
        n2 = _cap(rnd.choice(theme["n"]))
        return rnd.choice([f"#1 {base}", f"{base}?", f"{base}!", f"{base}...", f"100% {base}", f"{base}/{n2}",
                           f"{base} & {n2}", f"½ {base}", f"{base} (?)", f"{base} ~ {n2}", f"<{base}>",
                           f"{base} = {n2}", f"$ {base}", f"{base} *", f"{base}, Pt. {rnd.randint(1, 9)}"])
    if r < 0.91:
        return base.lower() if rnd.random() < 0.5 else base.upper()
    return _cap(pseudo_word(rnd)) + (f" {words[0]}" if rnd.random() < 0.5 else "")


def album_name(rnd: random.Random, theme: dict[str, list[str]]) -> str:
    r = rnd.random()
    words = " ".join(_cap(w) for w in _words(rnd, theme, rnd.choice((1, 2, 2, 3))))
    if r < 0.6:
        return words
    if r < 0.7:
        return f"Live at {rnd.choice(PLACES)}"
    if r < 0.8:
        return f"{words} EP"
    if r < 0.9:
        return f"{words}, Vol. {rnd.randint(1, 4)}"
    return rnd.choice(["Greatest Hits", "Demos", "B-Sides & Rarities", "Unplugged", "Self-Titled"]) + \
        f" {rnd.randint(1995, 2009)}"


def lyrics_lines(rnd: random.Random, theme: dict[str, list[str]], n_lines: int) -> list[str]:
    """Pseudo-English verses/chorus built mostly from the cluster's theme words (so a text
    embedding of the lyrics carries the taste cluster). ``""`` separates stanzas."""

    def w(kind: str) -> str:
        pool = theme if kind in theme and rnd.random() < 0.7 else GENERIC
        return rnd.choice(pool[kind])

    templates = [
        lambda: f"{w('pron')} {w('v')} the {w('n')}",
        lambda: f"{w('pron')} {w('v')} {w('adv')} {w('prep')} the {w('a')} {w('n')}",
        lambda: f"oh {w('n')}, {w('a')} {w('n')}",
        lambda: f"{w('pron')} never {w('v')} {w('det')} {w('n')}",
        lambda: f"{w('a')} {w('n')} {w('prep')} {w('det')} {w('n')}",
        lambda: f"{w('v')} me {w('adv')}",
        lambda: f"and the {w('n')} will {w('v')} {w('adv')}",
        lambda: f"{w('det')} {w('n')} is {w('a')} {w('adv')}",
    ]

    def line() -> str:
        return _cap(rnd.choice(templates)())

    chorus = [line() for _ in range(rnd.randint(2, 4))]
    out: list[str] = []
    while len([x for x in out if x]) < n_lines:
        out.extend(line() for _ in range(rnd.randint(3, 5)))
        out.append("")
        if rnd.random() < 0.6:
            out.extend(chorus)
            out.append("")
    lines: list[str] = []
    count = 0
    for x in out:
        if count >= n_lines:
            break
        lines.append(x)
        count += bool(x)
    while lines and not lines[-1]:
        lines.pop()
    return lines
