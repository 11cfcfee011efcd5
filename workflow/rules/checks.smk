# Checks of the dataset while the DAG is built, so that a dry run fails where a job would fail minutes or
# hours later: one line naming the key or the path.
from lst.data.phase_plan import phase_sizes

DEMO_DIR = "resources/demo"  # make_demo writes the embedded dataset here: train.json, val.json, images/
TOY_PRESETS = ("demo", "tiny")  # the 128 px model of the demo data


def check_phase_classes():
    """The train json (when on disk) has the classes the phases need, as split counts them."""
    train_json = config["dataset"]["train_json"]
    if Path(train_json).is_file():
        num_categories = count_categories(train_json)
        try:
            phase_sizes(num_categories, **config["phases"])
        except lst.errors.PhasePlanError as error:
            raise lst.errors.PhasePlanError(f"{error}; {train_json} has {num_categories} categories") from None


def checked_image_folders(wildcards):
    """check_data's input function: every image folder exists, but the one make_demo writes; it adds no input.
    Evaluated while the DAG is built, and only when a job reads images: annotation-only targets (split,
    build_replay) need no images."""
    refused(check_image_folders)
    return []


def check_image_folders():
    """Every image folder exists, but the one make_demo writes."""
    image_root = config["dataset"]["image_root"]
    folders = {"dataset.image_root": image_root} if isinstance(image_root, str) else {
        f"dataset.image_root.{split}": folder for split, folder in image_root.items()
    }  # fmt: skip
    for key, folder in folders.items():
        if os.path.normpath(folder) != os.path.join(DEMO_DIR, "images") and not Path(folder).is_dir():
            raise lst.errors.DataError(f"{key}: {folder}: no such folder (the images are read from it)")


def toy_preset_warning():
    """A warning when the demo's toy model would train on another dataset, or None."""
    train_json = config["dataset"]["train_json"]
    if config["preset"] not in TOY_PRESETS or os.path.normpath(train_json) == os.path.join(DEMO_DIR, "train.json"):
        return None
    return (
        f"lst: warning: preset {config['preset']} is the demo's 128 px toy model, for the embedded demo data, but "
        f"dataset.train_json is {train_json}: for real photographs give preset: photo_cpu (a CPU), or "
        "lvis_v0.5_lst / lvis_v1_lst (the paper's setting)"
    )


if workflow.is_main_process:  # not again in every cluster job (a 1 GB json is read for its categories)
    refused(check_phase_classes)
    if warning := toy_preset_warning():
        print(warning, file=sys.stderr)
