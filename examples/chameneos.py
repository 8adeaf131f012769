"""The chameneos game, over shared-memory mailboxes (upstream's camlbox example).

Creatures of some colours go to a meeting place, again and again. The place
pairs them two by two; both leave with the complement of their two colours.
After N meetings the place closes, and every creature says how many meetings
it had: the total is 2 N.

The meeting place is a process that owns a mailbox; it starts the creatures,
each with the box's id. Each creature owns a small mailbox of its own, where
the place answers it.
"""

from __future__ import annotations

import argparse
import enum

import msgspec

import netmcore

MEETINGS = 600


class Colour(enum.Enum):
    BLUE = "blue"
    RED = "red"
    YELLOW = "yellow"


def complement(a: Colour, b: Colour) -> Colour:
    if a == b:
        return a
    return ({Colour.BLUE, Colour.RED, Colour.YELLOW} - {a, b}).pop()


class Arrive(msgspec.Struct, frozen=True):
    creature: int
    colour: Colour
    reply: netmcore.ResId


class Met(msgspec.Struct, frozen=True, tag=True):
    partner: int
    colour: Colour


class Closed(msgspec.Struct, frozen=True, tag=True):
    pass


class Creature(msgspec.Struct, frozen=True):
    number: int
    colour: Colour
    place: netmcore.ResId


class Tally(msgspec.Struct, frozen=True):
    colour: Colour
    meetings: int
    met_itself: int


@netmcore.process
def creature(me: Creature) -> Tally:
    place = netmcore.Mailbox.open(me.place, Arrive)
    answers = netmcore.Mailbox.create(Met | Closed, slots=1, slot_size=64)
    colour, meetings, met_itself = me.colour, 0, 0
    while True:
        place.send(Arrive(me.number, colour, answers.res_id))
        answer = answers.receive()
        if isinstance(answer, Closed):
            break
        meetings += 1
        met_itself += answer.partner == me.number
        colour = complement(colour, answer.colour)
    place.close()
    answers.release()
    return Tally(me.colour, meetings, met_itself)


@netmcore.process
def meeting_place(game: tuple[list[Colour], int]) -> list[Tally]:
    colours, meetings = game
    box = netmcore.Mailbox.create(Arrive, slots=len(colours), slot_size=128)
    pids = [creature.start(Creature(k, c, box.res_id)) for k, c in enumerate(colours)]
    repliers: dict[int, netmcore.Mailbox[Met | Closed]] = {}
    waiting: Arrive | None = None
    closed = 0
    while closed < len(colours):
        arrival = box.receive()
        reply = repliers.setdefault(
            arrival.creature, netmcore.Mailbox.open(arrival.reply, Met | Closed)
        )
        if meetings == 0:
            reply.send(Closed())
            closed += 1
        elif waiting is None:
            waiting = arrival
        else:
            repliers[waiting.creature].send(Met(arrival.creature, arrival.colour))
            reply.send(Met(waiting.creature, waiting.colour))
            waiting = None
            meetings -= 1
    for mailbox in repliers.values():
        mailbox.close()
    box.release()
    tallies = [creature.join(pid) for pid in pids]
    if any(t is None for t in tallies):
        raise RuntimeError("a creature failed")
    return [t for t in tallies if t is not None]


B, R, Y = Colour.BLUE, Colour.RED, Colour.YELLOW
GAMES = [[B, R, Y], [B, R, Y, R, Y, B, R, Y, R, B]]  # the classic 3 and 10 colours


@netmcore.process
def tournament(meetings: int) -> list[list[Tally]]:
    results = []
    for colours in GAMES:
        tallies = meeting_place.join(meeting_place.start((colours, meetings)))
        if tallies is None:
            raise RuntimeError("a meeting place failed")
        results.append(tallies)
    return results


def main(meetings: int = MEETINGS) -> list[list[Tally]]:
    games = netmcore.run(
        first_process=lambda: tournament.start(meetings),
        extract_result=lambda _ctrl, pid: tournament.join_nowait(pid),
    )
    if games is None:
        raise SystemExit("the tournament failed")
    for tallies in games:
        print(" ".join(t.colour.value for t in tallies))
        for t in tallies:
            print(f"{t.meetings} meetings, {t.met_itself} with itself")
        total = sum(t.meetings for t in tallies)
        print(f"total: {total} (2 x {meetings} = {2 * meetings})\n")
    return games


def _meetings(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:  # the place would never close
        raise argparse.ArgumentTypeError(f"{value} is not valid: give 0 or more")
    return value


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("meetings", nargs="?", type=_meetings, default=MEETINGS)
    main(parser.parse_args().meetings)
