"""Reads one JSON document per line and writes Python's default json.dumps of each."""
import json
import sys

for line in sys.stdin:
    print(json.dumps(json.loads(line)), flush=True)
