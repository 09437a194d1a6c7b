"""Facts <-> ``task_supplementor_msgs/VisualFacts``: the only place that knows both representations."""

from __future__ import annotations

from std_msgs.msg import Header
from task_supplementor_msgs.msg import GripperState, ObjectFact as ObjectFactMsg, SpatialRelation, VisualFacts

from task_supplementor.facts import SCHEMA_VERSION, Facts, FactsOutcome, Gripper, ObjectFact, Relation

_STATE_TO_MSG = {"unknown": GripperState.UNKNOWN, "open": GripperState.OPEN, "closed": GripperState.CLOSED}
_MSG_TO_STATE = {value: key for key, value in _STATE_TO_MSG.items()}


def facts_to_msg_fields(facts: Facts, msg: VisualFacts) -> VisualFacts:
    """Fill the typed fact fields of ``msg`` (objects, relations, gripper) from ``facts``."""
    msg.objects = [ObjectFactMsg(name=o.name, attributes=list(o.attributes), region=o.region) for o in facts.objects]
    msg.relations = [SpatialRelation(subject=r.subject, relation=r.relation, object=r.object)
                     for r in facts.relations]
    msg.gripper = GripperState(state=_STATE_TO_MSG[facts.gripper.state], holding=facts.gripper.holding)
    return msg


def facts_outcome_to_msg(outcome: FactsOutcome, *, header: Header, task: str, model_id: str,
                         latency_s: float) -> VisualFacts:
    """The message published for one frame; invalid outcomes are published too, flagged, with their reasons."""
    msg = VisualFacts(header=header, task=task, supplement=outcome.supplement, schema_version=SCHEMA_VERSION,
                      model_id=model_id, valid=outcome.valid, violations=list(outcome.violations),
                      latency_s=float(latency_s))
    if outcome.facts is not None:
        facts_to_msg_fields(outcome.facts, msg)
    return msg


def msg_to_facts(msg: VisualFacts) -> Facts:
    """The typed facts carried by a message (raises ValueError on an unknown gripper state or bad vocabulary)."""
    if msg.gripper.state not in _MSG_TO_STATE:
        raise ValueError(f"unknown gripper state {msg.gripper.state} in VisualFacts")
    return Facts(
        objects=[ObjectFact(name=o.name, attributes=list(o.attributes), region=o.region) for o in msg.objects],
        relations=[Relation(subject=r.subject, relation=r.relation, object=r.object) for r in msg.relations],
        gripper=Gripper(state=_MSG_TO_STATE[msg.gripper.state], holding=msg.gripper.holding),
    )
