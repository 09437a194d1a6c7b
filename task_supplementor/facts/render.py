"""Facts -> the short ``supplement`` text fused into a VLA prompt.

Deterministic and order-independent: the same facts always give the same text, whatever order the model listed
objects, attributes or relations in. A VLA's prompt sensitivity (a trailing '.' can change OpenVLA's behaviour)
makes a stable surface form part of the contract, not a cosmetic choice.
"""

from __future__ import annotations

from task_supplementor.facts.schema import Facts, ObjectFact


def _object_phrase(obj: ObjectFact) -> str:
    details = sorted({a.strip().lower() for a in obj.attributes if a.strip()})
    if obj.region != "unknown":
        details.append(obj.region)
    name = obj.name.strip().lower()
    return f"{name} ({', '.join(details)})" if details else name


def render_supplement(facts: Facts) -> str:
    """E.g. ``objects: blue plate (center); red block (wooden, top-left). relations: red block left of blue plate.
    gripper: open, holding nothing.``"""
    objects = sorted(_object_phrase(o) for o in facts.objects)
    relations = sorted(
        f"{r.subject.strip().lower()} {r.relation.replace('_', ' ')} {r.object.strip().lower()}"
        for r in facts.relations
    )
    holding = facts.gripper.holding.strip().lower() or "nothing"
    parts = [
        f"objects: {'; '.join(objects) if objects else 'none'}.",
        f"relations: {'; '.join(relations) if relations else 'none'}.",
        f"gripper: {facts.gripper.state}, holding {holding}.",
    ]
    return " ".join(parts)
