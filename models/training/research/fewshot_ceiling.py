"""What an ideal in-context learner scores on the eval split's 2- and 4-shot episodes.

It knows the world's rules: the episode's labels follow one attribute (shape, colour or size, each
equally likely), and with two or more demonstrations the query's label is always among them (the
generator forces a matching demonstration; with one it may be unseen, so 1-shot is not scored). It
keeps every attribute whose values agree with the demonstrations' labels (same value ⇔ same label)
and that some demonstration shares with the query, lets each predict that demonstration's label, and
answers the label most of them predict (ties split evenly). Where it falls short of 100%, the
demonstrations do not determine the attribute by these rules alone. It is not a strict ceiling: a
learner that also weighs how likely each match is by chance (two colours agree less often than two
sizes) can score higher, as the LM does on 2-shot. Where the LM falls far below it, the LM is not
using what the demonstrations tell.

  /usr/bin/python3 models/training/research/fewshot_ceiling.py --eval ~/.cache/emu2-tiny/data/eval
"""
import argparse
import collections
import json
import os

ATTRS = ("shape", "color", "size")


def ideal(labels, demos, query) -> dict:
    """→ {label: probability the ideal learner answers it}."""
    k = len(demos)
    preds = []
    for a in ATTRS:
        if not all((demos[i][a] == demos[j][a]) == (labels[i] == labels[j]) for i in range(k) for j in range(k)):
            continue
        shown = [labels[i] for i in range(k) if demos[i][a] == query[a]]
        if shown:
            preds.append(shown[0])
    votes = collections.Counter(preds or [None])
    top = [p for p, n in votes.items() if n == max(votes.values())]
    return {p: 1 / len(top) for p in top}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval", required=True)
    a = ap.parse_args()
    meta = json.load(open(os.path.join(a.eval, "meta.json")))
    end = meta["special_ids"]["[/IMG]"]
    images = [json.loads(ln) for ln in open(os.path.join(a.eval, "images.jsonl"))]
    score = collections.defaultdict(list)
    for ln in open(os.path.join(a.eval, "fewshot.jsonl")):
        r = json.loads(ln)
        k = r["expect"]["shots"]
        if k < 2:
            continue
        ids = r["ids"]
        labels = [ids[i + 1] for i, t in enumerate(ids) if t == end][:-1]
        objs = [images[i]["objects"][0] for i in r["images"]]
        score[k].append(ideal(labels, objs[:-1], objs[-1]).get(ids[r["prompt"]], 0.0))
    for k, v in sorted(score.items()):
        print(f"{k}-shot: ideal learner {100 * sum(v) / len(v):.1f}% of {len(v)} episodes")


if __name__ == "__main__":
    main()
