#!/usr/bin/env python3
"""Regenerates samples/documents.csv (seeded: the output never changes).

Realistic rows for the port of Le Havre: announcement document numbers,
customs ways, S)ONE locations and shipping agent codes, with a few rows
invalid on purpose and one exact duplicate, so that a first run shows every
kind of outcome.
"""
import csv
import random
import sys

rng = random.Random(20261125)
WAYS = ["Import"] * 6 + ["Export"] * 4 + ["Transhipment", "Transit", ""]
PLACES = ["MTDF", "TNMSC", "TPO", "TES", "BNP", "MTDF", ""]
AGENTS = ["CCGM", "MSCU", "MAEU", "HLCU", "CMDU", "ONEY", ""]
HOOKS = ["", "", "", "https://hooks.transitaire-normand.fr/soget/events"]


def reference(i):
    kind = rng.random()
    if kind < 0.6:
        return f"37{rng.randrange(10**8):08d}"
    if kind < 0.85:
        return f"LEH{rng.randrange(2024, 2027)}{rng.randrange(10**6):06d}"
    return f"CMDUFR{rng.randrange(10**7):07d}"


rows = []
for i in range(300):
    rows.append([reference(i), rng.choice(WAYS), rng.choice(PLACES), rng.choice(AGENTS), rng.choice(HOOKS)])

# Invalid on purpose, each for one reason the spec gives.
rows[17][1] = "Inport"                                 # way not in CustomsIndicators
rows[42][2] = "TERMINAL DE FRANCE NORD"                # place over 20 characters
rows[99][0] = ""                                       # documentReference empty
rows[150][4] = "http://localhost:8080/hook"            # url outside the spec's pattern
rows[222][3] = "AGENT-" + "X" * 60                     # agentCode over 64 characters
# An exact duplicate of an earlier row: sent once.
rows.insert(260, list(rows[12]))

w = csv.writer(sys.stdout, lineterminator="\n")
w.writerow(["documentReference", "way", "place", "agentCode", "url"])
w.writerows(rows)
