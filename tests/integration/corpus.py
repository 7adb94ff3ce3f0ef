"""Texts and chats for the integration tests: real prose, gibberish, multi-turn chats."""

from __future__ import annotations

import random

ENGLISH = [
    "The orangutan is a great ape native to the rainforests of Indonesia and Malaysia. "
    "They are now found only in parts of Borneo and Sumatra, and spend most of their time in trees.",
    "When the committee met on Tuesday, it agreed to postpone the vote until the budget figures "
    "had been checked by an independent auditor. Several members said they were worried that "
    "the forecasts were too optimistic.",
    "To make a simple bread, mix flour, water, salt and yeast into a dough, knead it for ten "
    "minutes, and let it rise in a warm place until it has doubled in size.",
    "Human: What is the capital of France?\nAssistant: The capital of France is Paris.",
    "In 1969, the Apollo 11 mission landed the first humans on the Moon. Neil Armstrong and Buzz "
    "Aldrin spent about two and a quarter hours outside the spacecraft.",
]

OTHER = [
    "Москва — столица России, крупнейший по численности населения город страны.",
    "Die Katze schläft auf dem Sofa, während draußen der Regen gegen das Fenster prasselt.",
    "Grüße aus München! Das Wetter ist schön und wir gehen heute in den Biergarten. 🍺",
]


def gibberish(seed: int, source: str = ENGLISH[1]) -> str:
    """The characters of a prose text, shuffled."""
    chars = list(source)
    random.Random(seed).shuffle(chars)
    return "".join(chars)


GIBBERISH = [
    "asdkj qwpoe zmxn ,,,, 1238 !!! qqqq",
    gibberish(1),
    gibberish(2),
]

CHATS = [
    [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."},
    ],
    [
        {"role": "user", "content": "Can you help me write a haiku about autumn?"},
        {
            "role": "assistant",
            "content": "Crimson leaves falling,\nwhispers of the cooling wind,\nthe year breathes slowly.",
        },
        {"role": "user", "content": "Now one about winter, please."},
        {
            "role": "assistant",
            "content": "Silent snow settles,\nbare branches hold the pale light,\nthe world waits for spring.",
        },
    ],
    [
        {"role": "user", "content": "assistant"},
        {"role": "assistant", "content": "user"},
        {"role": "user", "content": "How many legs does a spider have?"},
        {"role": "assistant", "content": "A spider has eight legs."},
    ],
]
