"""The competition's 29 classes, in channel order."""

CLASSES = [f"finger-{i}" for i in range(1, 20)] + [
    "Trapezium",
    "Trapezoid",
    "Capitate",
    "Hamate",
    "Scaphoid",
    "Lunate",
    "Triquetrum",
    "Pisiform",
    "Radius",
    "Ulna",
]
CLASS_TO_INDEX = {name: index for index, name in enumerate(CLASSES)}
NUM_CLASSES = len(CLASSES)
