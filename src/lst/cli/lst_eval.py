"""``lst-eval``: LVIS federated evaluation of a detections file (LVIS results json or lst's Parquet) against an
LVIS annotation json, with lvis-api's numbers (lst.evaluation.lvis_eval); prints the metrics as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from lst.evaluation.lvis_eval import (
    AREA_RULES,
    BOX_COLUMNS,
    FIXED_AP_DETS_PER_CLASS,
    IOU_TYPES,
    check_rle_sizes,
    evaluate_lvis,
    export_lvis_results,
    image_sizes,
    load_detections,
    lvis_api_det_area,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lst-eval",
        description="LVIS federated evaluation (lvis-api numbers); prints metrics as JSON.  With --export-json, "
        "also (or only, without --iou-type) writes the detections as an LVIS results json.",
    )
    parser.add_argument("--gt", required=True, help="LVIS annotation json")
    parser.add_argument("--dets", required=True, help="LVIS results json or Parquet detections")
    parser.add_argument("--iou-type", choices=IOU_TYPES, help="evaluate boxes or masks")
    parser.add_argument("--max-dets", type=int, default=None, help="detections kept per image (default 300)")
    parser.add_argument(
        "--fixed-ap",
        action="store_true",
        help=f"Fixed AP (Dave et al. 2021): no per-image cap, top {FIXED_AP_DETS_PER_CLASS} detections per class",
    )
    parser.add_argument(
        "--area",
        choices=AREA_RULES,
        default="lvis",
        help="what sizes a segm detection for APs/APm/APl and the area-0 rule: 'lvis' (default) as lvis-api's "
        "LVISResults, its box (w * h) when the detections carry boxes (a bbox in every json record, or "
        "x/y/w/h Parquet columns), else its mask; 'mask' its mask, as detectron2 and the pipeline's own "
        "evaluation do.  bbox detections are sized by their box either way",
    )
    parser.add_argument("--export-json", metavar="OUT.json", help="write the detections as an LVIS results json")
    args = parser.parse_args(argv)
    if args.iou_type is None and args.export_json is None:
        parser.error("give --iou-type (evaluate), --export-json (convert), or both")
    if args.fixed_ap and args.max_dets is not None:
        parser.error("--fixed-ap has no per-image cap: leave out --max-dets")

    try:
        with open(args.gt, encoding="utf-8") as f:
            gt = json.load(f)
        if not isinstance(gt, dict) or not {"images", "annotations", "categories"} <= gt.keys():
            raise ValueError("not an LVIS annotation dict (needs images, annotations, categories)")
    except (OSError, ValueError) as e:
        print(f"lst-eval: cannot read ground truth file {args.gt}: {e}", file=sys.stderr)
        return 2
    columns = None
    if args.export_json is None:  # read only what the evaluation needs
        columns = ["image_id", "category_id", "score", "rle_height", "rle_width"]
        columns += list(BOX_COLUMNS) if args.iou_type == "bbox" or args.area == "lvis" else []
        columns += ["rle_counts"] if args.iou_type == "segm" else []
    try:
        dets = load_detections(args.dets, columns=columns)
    except Exception as e:  # json, pyarrow and OS errors alike: the file is unusable
        print(f"lst-eval: cannot read detections file {args.dets}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    try:
        check_rle_sizes(dets, gt)
        if args.export_json is not None:
            count = export_lvis_results(dets, args.export_json, image_sizes(gt))
            print(f"lst-eval: wrote {count} detections to {args.export_json}", file=sys.stderr)
        if args.iou_type is None:
            return 0
        max_dets = 300 if args.max_dets is None else args.max_dets
        det_area = lvis_api_det_area(dets, args.iou_type) if args.area == "lvis" else None
        result = evaluate_lvis(
            gt, dets, args.iou_type, max_dets_per_image=max_dets, fixed_ap=args.fixed_ap, det_area=det_area
        )
    except (ValueError, KeyError) as e:
        print(f"lst-eval: cannot evaluate {args.dets} against {args.gt}: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"lst-eval: cannot write {args.export_json}: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result.metrics, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
