from pipeline.captioning.attributes import Attributes, attributes_from_tags
from pipeline.data.synthetic.synthesize import fashioniq_tags


def test_sentence_names_every_attribute():
    a = Attributes("dress", colors=("navy", "white"), pattern="striped", sleeves="long sleeves",
                   neckline="v-neck", length="maxi")
    assert a.sentence() == "a navy striped dress with white stripes, long sleeves, a v-neck and a maxi cut"


def test_solid_garment_has_no_accent():
    a = Attributes("toptee", colors=("red", "blue"), pattern="solid", sleeves="sleeveless")
    assert a.accent is None
    assert a.sentence() == "a red top with no sleeves"


def test_tags_round_trip_through_fashioniq_layout():
    a = Attributes("shirt", colors=("green", "yellow"), pattern="dotted", sleeves="short sleeves",
                   neckline="square neck", length="cropped")
    tags = [w for group in fashioniq_tags(a) for w in group if w]
    assert attributes_from_tags("shirt", tags) == a


def test_unknown_tag_words_become_details():
    a = attributes_from_tags("dress", ["Red", "chiffon", "floral"])
    assert a.colors == ("red",) and a.pattern == "floral" and a.details == ("chiffon",)


def test_changed_fields_are_the_known_ones_that_differ():
    a = Attributes("dress", colors=("red",), pattern="solid", sleeves="short sleeves", neckline="v-neck",
                   length="mini")
    b = Attributes("dress", colors=("blue",), pattern="solid", sleeves="long sleeves", neckline="v-neck",
                   length=None)
    assert a.changed_fields(b) == ["color", "sleeves"]  # length unknown on b: never claimed as a change
