"""Sample prompts for `tabfleetctl demo`: 36 written ones, then as many more as asked for."""

from __future__ import annotations

import itertools

DEMO_PROMPTS = (
    'a red fox at dawn, watercolour',
    'a lighthouse at dawn, watercolour',
    'a teapot at dawn, watercolour',
    'a bicycle at dawn, watercolour',
    'a mountain lake at dawn, watercolour',
    'a paper crane at dawn, watercolour',
    'an old tram at dawn, watercolour',
    'a cactus at dawn, watercolour',
    'a violin at dawn, watercolour',
    'a snowy owl at dawn, watercolour',
    'a windmill at dawn, watercolour',
    'a sailboat at dawn, watercolour',
    'a red fox in neon light, synthwave poster',
    'a lighthouse in neon light, synthwave poster',
    'a teapot in neon light, synthwave poster',
    'a bicycle in neon light, synthwave poster',
    'a mountain lake in neon light, synthwave poster',
    'a paper crane in neon light, synthwave poster',
    'an old tram in neon light, synthwave poster',
    'a cactus in neon light, synthwave poster',
    'a violin in neon light, synthwave poster',
    'a snowy owl in neon light, synthwave poster',
    'a windmill in neon light, synthwave poster',
    'a sailboat in neon light, synthwave poster',
    'a red fox as a linocut print',
    'a lighthouse as a linocut print',
    'a teapot as a linocut print',
    'a bicycle as a linocut print',
    'a mountain lake as a linocut print',
    'a paper crane as a linocut print',
    'an old tram as a linocut print',
    'a cactus as a linocut print',
    'a violin as a linocut print',
    'a snowy owl as a linocut print',
    'a windmill as a linocut print',
    'a sailboat as a linocut print',
)

SUBJECTS = ("a red fox", "a lighthouse", "a teapot", "a bicycle", "a mountain lake", "a paper crane", "an old tram",
            "a cactus", "a violin", "a snowy owl", "a windmill", "a sailboat", "a hot-air balloon", "a koi pond",
            "a steam engine", "a chess set")
STYLES = ("in ink and wash", "as a mosaic", "in claymation", "as a blueprint", "as a stained-glass window",
          "in pixel art", "as an embroidery", "in charcoal", "as a tin toy", "on a vintage stamp")
PLACES = ("at noon", "in the rain", "under the stars", "in autumn", "in a snowstorm", "at the seaside")


def demo_prompts(count: int) -> list[str]:
    """`count` distinct prompts: the written samples first, then generated subject × style × place ones, numbered past those."""
    made = itertools.chain(DEMO_PROMPTS, (f"{s} {p}, {st}" for st in STYLES for p in PLACES for s in SUBJECTS))
    prompts = list(itertools.islice(made, count))
    base = len(prompts)
    prompts += [f"{DEMO_PROMPTS[i % len(DEMO_PROMPTS)]}, variation {i // len(DEMO_PROMPTS) + 1}" for i in range(count - base)]
    return prompts
