"""`fruits feedback`: the photos the app's users confirmed or corrected (spark_code.storage.feedback), listed, one
removed, or every photo of one sender dropped."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict

from spark_code.storage.feedback import FeedbackNotFound, FeedbackStore


def add_feedback_parser(commands: argparse._SubParsersAction) -> None:
    feedback = commands.add_parser(
        "feedback", help="the photos the app's users confirmed or corrected: list them, remove one, drop a sender's"
    )
    feedback.add_argument("--feedback-root", help="the feedback area, local or s3:// (default: $FRUITS_FEEDBACK_ROOT)")
    feedback.add_argument("--json", action="store_true", help="print the records as JSON")
    actions = feedback.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="every stored photo: id, class, sender, source, time")
    remove = actions.add_parser("remove", help="remove one photo (the next run trains without it)")
    remove.add_argument("photo_id", help="the photo's id (its SHA-256), or its start as `list` shows it")
    drop = actions.add_parser("drop-sender", help="remove every photo one sender sent")
    drop.add_argument("sender")


def _line(record: dict) -> str:
    missing = "" if record.get("stored", True) else "  (photo missing: remove it)"
    fields = [record["id"][:12], record["label"], record["sender"], record["source"], record["received_at"]]
    return "  ".join(fields) + missing


def feedback_command(args: argparse.Namespace) -> int:
    root = args.feedback_root or os.environ.get("FRUITS_FEEDBACK_ROOT")
    if not root:
        print("fruits: error: give --feedback-root or set FRUITS_FEEDBACK_ROOT", file=sys.stderr)
        return 2
    store = FeedbackStore(root)
    try:
        if args.action == "list":
            records = store.listed()
        elif args.action == "remove":
            records = [asdict(store.remove(store.full_id(args.photo_id)))]
        else:
            records = [asdict(r) for r in store.drop_sender(args.sender)]
    except FeedbackNotFound as missing:
        print(f"fruits: error: no feedback photo {missing.args[0]} under {root}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(records))
    else:
        verb = {"list": "stored", "remove": "removed", "drop-sender": "removed"}[args.action]
        print(f"{len(records)} photo(s) {verb}")
        for record in records:
            print("  " + _line(record))
    return 0
