"""Word lists and templates of the circuit tasks.

Written for this project (common first names, common nouns, country facts that are general
knowledge); no third-party dataset is copied. Released with the toolkit under its licence.
Only the words the model's tokenizer keeps as one token (with a leading space) are used.
"""

NAMES = (
    "Mary John Tom James Anna Paul Mark Sarah Laura David Lisa Peter Kate Emma Jack Mike Ben Sam "
    "Alex Adam Daniel Rachel Susan Linda Karen Nancy Helen Chris Steve Kevin Brian George Frank Henry "
    "Emily Alice Grace Lucy Jane Amy Ryan Eric Jason Scott Andrew Joseph Robert William Richard Thomas"
).split()

IOI_TEMPLATES = (
    "When {A} and {B} went to the store, {S} gave a drink to",
    "When {A} and {B} went to the park, {S} handed a ball to",
    "After {A} and {B} had lunch, {S} passed the salt to",
    "While {A} and {B} were at the party, {S} brought a cake to",
    "{A} and {B} went to the library. {S} lent a pen to",
    "Then, {A} and {B} were working at the office. {S} decided to give a book to",
    "Friends {A} and {B} found a bag at the beach. {S} gave the bag to",
    "When {A} and {B} arrived at the school, {S} showed a picture to",
)

GT_NOUNS = "war strike drought expedition project reign siege famine festival tour".split()
GT_TEMPLATES = (
    "The {N} lasted from the year {C}{X} to the year {C}",
    "The {N} started in the year {C}{X} and ended in the year {C}",
    "The {N} ran from {C}{X} to {C}",
)
GT_CENTURIES = ("16", "17", "18")

# (country, capital, language)
COUNTRIES = (
    ("France", "Paris", "French"), ("Italy", "Rome", "Italian"), ("Germany", "Berlin", "German"),
    ("Spain", "Madrid", "Spanish"), ("Japan", "Tokyo", "Japanese"), ("Russia", "Moscow", "Russian"),
    ("England", "London", "English"), ("Greece", "Athens", "Greek"), ("Egypt", "Cairo", "Arabic"),
    ("China", "Beijing", "Chinese"), ("Portugal", "Lisbon", "Portuguese"), ("Austria", "Vienna", "German"),
    ("Poland", "Warsaw", "Polish"), ("Sweden", "Stockholm", "Swedish"), ("Norway", "Oslo", "Norwegian"),
    ("Ireland", "Dublin", "English"), ("Turkey", "Ankara", "Turkish"), ("Canada", "Ottawa", "English"),
    ("Kenya", "Nairobi", "Swahili"), ("Peru", "Lima", "Spanish"), ("Cuba", "Havana", "Spanish"),
    ("Finland", "Helsinki", "Finnish"), ("Denmark", "Copenhagen", "Danish"), ("Hungary", "Budapest", "Hungarian"),
)
FACT_TEMPLATES = (
    ("capital", "The capital of {S} is"),
    ("capital", "The capital city of {S} is"),
    ("capital", "{S}'s capital is the city of"),
    ("language", "The official language of {S} is"),
    ("language", "In {S}, most people speak"),
)

NOUNS = (
    "apple table river chair window garden pencil bottle mountain doctor teacher island forest "
    "candle mirror rabbit engine letter castle bridge jacket pocket planet button silver orange "
    "basket ladder hammer violin camera wallet tunnel desert anchor feather helmet"
).split()
