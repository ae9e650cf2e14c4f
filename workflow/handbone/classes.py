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

# The fingers' bones run from the thumb's tip (finger-1) to the little
# finger's metacarpal (finger-19): three for the thumb, four for each other
# finger, fingertip first, so every ray ends with its metacarpal.
METACARPALS = ["finger-3", "finger-7", "finger-11", "finger-15", "finger-19"]
# The bones by kind, as the prediction analysis compares them: small bones
# (carpals, fingertips) fail in other ways than long ones.
CLASS_GROUPS = {
    "carpals": CLASSES[19:27],
    "metacarpals": METACARPALS,
    "phalanges": [name for name in CLASSES[:19] if name not in METACARPALS],
    "radius and ulna": ["Radius", "Ulna"],
}

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
