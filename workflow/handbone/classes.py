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

# Typical age in years at which each carpal's ossification centre appears
# (Greulich and Pyle's atlas, boys and girls averaged): a young child's
# radiograph lacks the carpals not yet ossified, latest first.
OSSIFICATION_AGE = {
    "Capitate": 0.3,
    "Hamate": 0.5,
    "Triquetrum": 2.5,
    "Lunate": 3.5,
    "Trapezium": 5.0,
    "Trapezoid": 5.5,
    "Scaphoid": 5.5,
    "Pisiform": 10.0,
}
