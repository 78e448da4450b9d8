"""Generate the two small datasets the quickstart recipe trains on.

Both tasks are ones a program can score exactly, so the quickstart can show, with numbers, that
each adapter beats the base model:

* ``contacts``: pull a person's name, age and city out of a sentence as one strict JSON object with
  fixed keys. The prompt does not name the keys; the adapter has to learn the house format.
* ``dates``: rewrite a date written in words as ISO 8601 (``YYYY-MM-DD``) and nothing else.

The output is deterministic for a given seed: ``python scripts/make_quickstart_data.py --check``
fails when the committed files differ from what the script produces.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parents[1] / "recipes" / "data" / "quickstart"
ROWS_PER_TASK = 400

FIRST_NAMES = [
    "Ada",
    "Bruno",
    "Chiara",
    "Dmitri",
    "Elif",
    "Farah",
    "Goran",
    "Hana",
    "Ines",
    "Jonas",
    "Keiko",
    "Liam",
    "Mele",
    "Nadia",
    "Omar",
    "Priya",
    "Quentin",
    "Rosa",
    "Sven",
    "Tomasz",
    "Uma",
    "Viktor",
    "Wen",
    "Ximena",
    "Yusuf",
    "Zofia",
    "Aiden",
    "Beatriz",
    "Chen",
    "Daria",
]
LAST_NAMES = [
    "Abara",
    "Berg",
    "Costa",
    "Dubois",
    "Eriksen",
    "Fischer",
    "Garcia",
    "Haddad",
    "Ivanova",
    "Jensen",
    "Kowalski",
    "Laurent",
    "Moreau",
    "Nakamura",
    "Okafor",
    "Petrov",
    "Quinn",
    "Rossi",
    "Silva",
    "Tanaka",
]
CITIES = [
    "Lisbon",
    "Nairobi",
    "Osaka",
    "Lima",
    "Krakow",
    "Montreal",
    "Tunis",
    "Hanoi",
    "Bergen",
    "Porto",
    "Seville",
    "Dakar",
    "Busan",
    "Quito",
    "Tallinn",
    "Perth",
    "Graz",
    "Cusco",
    "Leeds",
    "Bilbao",
]
CONTACT_TEMPLATES = [
    "{name} is {age} years old and lives in {city}.",
    "Meet {name}, a {age}-year-old from {city}.",
    "{city} resident {name} turned {age} this year.",
    "Our new customer, {name} ({age}), is based in {city}.",
    "After moving to {city}, {name} celebrated turning {age}.",
    "Name: {name}. Age: {age}. Lives in {city}.",
    "{name}, aged {age}, works remotely from {city}.",
    "I met {name} in {city}; {name_first} is {age}.",
]
CONTACT_PROMPTS = [
    "Extract the contact record from this text: {text}",
    "Contact record for: {text}",
    "Turn this into a contact record: {text}",
]

MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
DATE_TEMPLATES = [
    "{month} {day}, {year}",
    "{day} {month} {year}",
    "the {ordinal} of {month}, {year}",
    "{mon} {day} {year}",
    "{month} {ordinal}, {year}",
    "{weekday_free}{day} {mon}. {year}",
]
DATE_PROMPTS = [
    "Normalize this date: {text}",
    "Date to normalize: {text}",
    'Normalize the date "{text}"',
]


def ordinal(day: int) -> str:
    """Return 1st, 2nd, 3rd, 4th ... 21st, 22nd ... for a day of the month."""
    suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def chat_row(prompt: str, answer: str) -> dict:
    """One row in the OpenAI ``messages`` format the recipe declares as ``format: chat``."""
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]}


def contact_rows(rng: random.Random, count: int) -> list[dict]:
    """Sentences about a person and the compact JSON record the adapter must produce."""
    rows, seen = [], set()
    while len(rows) < count:
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        name, age, city = f"{first} {last}", rng.randint(18, 89), rng.choice(CITIES)
        text = rng.choice(CONTACT_TEMPLATES).format(name=name, name_first=first, age=age, city=city)
        if text in seen:
            continue
        seen.add(text)
        answer = json.dumps({"name": name, "age": age, "city": city})
        rows.append(chat_row(rng.choice(CONTACT_PROMPTS).format(text=text), answer))
    return rows


def date_rows(rng: random.Random, count: int) -> list[dict]:
    """Dates written in words and their ISO 8601 form."""
    rows, seen = [], set()
    while len(rows) < count:
        year, month = rng.randint(1950, 2035), rng.randint(1, 12)
        day = rng.randint(1, DAYS_IN_MONTH[month - 1])
        name = MONTHS[month - 1]
        text = rng.choice(DATE_TEMPLATES).format(
            month=name,
            mon=name[:3],
            day=day,
            ordinal=ordinal(day),
            year=year,
            weekday_free=rng.choice(["", "on "]),
        )
        if text in seen:
            continue
        seen.add(text)
        rows.append(chat_row(rng.choice(DATE_PROMPTS).format(text=text), f"{year:04d}-{month:02d}-{day:02d}"))
    return rows


def render(rows: list[dict]) -> str:
    """JSON Lines text with a stable key order."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def build(seed: int) -> dict[str, str]:
    """File name to content for every quickstart dataset."""
    return {
        "contacts.jsonl": render(contact_rows(random.Random(seed), ROWS_PER_TASK)),
        "dates.jsonl": render(date_rows(random.Random(seed + 1), ROWS_PER_TASK)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--check", action="store_true", help="fail if the files on disk differ")
    args = parser.parse_args()
    files = build(args.seed)
    if args.check:
        stale = [
            n
            for n, text in files.items()
            if not (args.out / n).is_file() or (args.out / n).read_text(encoding="utf-8") != text
        ]
        for name in stale:
            print(f"{args.out / name} is not what the generator produces; rerun without --check", file=sys.stderr)
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out / name).write_text(text, encoding="utf-8")
        print(f"wrote {args.out / name} ({text.count(chr(10))} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
