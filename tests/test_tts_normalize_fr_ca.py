"""The Québec (fr-CA) reading normaliser, table-driven: what Léa writes for a Québec broker →
what the voice reads. Also the locale switch itself (fr-CA by default, fr-FR on request,
anything else refused)."""

from __future__ import annotations

import re

import pytest

from lea_local.tts.normalize import normalize_for_speech

CASES = [
    # the sentence a broker's assistant writes every day
    (
        "La promesse d'achat (PA) pour le 2643 Sherbrooke Est, Montréal (Québec) H2K 1E1 est à 550 000 $.",
        "La promesse d'achat (P A) pour le deux mille six cent quarante-trois Sherbrooke Est, "
        "Montréal, Québec H deux K, un E un est à cinq cent cinquante mille dollars.",
    ),
    # amounts: "$" after the number
    ("Le prix demandé est de 550 000 $.", "Le prix demandé est de cinq cent cinquante mille dollars."),
    ("Le prix\u00a0: 550\u00a0000\u00a0$.", "Le prix : cinq cent cinquante mille dollars."),
    ("Le prix : 550\u202f000 $.", "Le prix : cinq cent cinquante mille dollars."),
    ("Il reste 1 $ à payer.", "Il reste un dollar à payer."),
    ("Un budget de 1,5 M$.", "Un budget de un virgule cinq million de dollars."),  # singular below 2
    ("Un immeuble de 2 M$.", "Un immeuble de deux millions de dollars."),
    ("Un portefeuille de 2,5 M$.", "Un portefeuille de deux virgule cinq millions de dollars."),
    ("Une mise de fonds de 450 k$.", "Une mise de fonds de quatre cent cinquante mille dollars."),
    ("Un projet de 1 G$.", "Un projet de un milliard de dollars."),
    ("Un loyer de 850 $/mois.", "Un loyer de huit cent cinquante dollars par mois."),
    ("Des frais de 12,50 $.", "Des frais de douze dollars cinquante."),
    ("Un condo à 1 000 000 $.", "Un condo à un million de dollars."),
    ("Un plex à 2 000 000 $.", "Un plex à deux millions de dollars."),
    ("Une maison à 1 500 000 $.", "Une maison à un million cinq cent mille dollars."),
    ("Des frais de condo de 325,50 $/mois.", "Des frais de condo de trois cent vingt-cinq dollars cinquante par mois."),
    (
        "Des taxes municipales de 3 850 $/an.",
        "Des taxes municipales de trois mille huit cent cinquante dollars par année.",
    ),
    ("Une évaluation de 2 millions $.", "Une évaluation de deux millions de dollars."),
    ("Le client paie 20 $ US.", "Le client paie vingt dollars américains."),
    ("Un dépôt de $500.", "Un dépôt de cinq cents dollars."),
    ("Le budget est de 1 $ ou 0,99 $.", "Le budget est de un dollar ou quatre-vingt-dix-neuf cennes."),
    # surfaces in square feet, price per square foot, dimensions
    ("Un condo de 1 200 pi².", "Un condo de mille deux cents pieds carrés."),
    ("Un loft de 900 pi2.", "Un loft de neuf cents pieds carrés."),
    ("Un 4 ½ de 850 pc.", "Un quatre et demie de huit cent cinquante pieds carrés."),
    ("Un bureau de 1 500 p.c.", "Un bureau de mille cinq cents pieds carrés."),  # the dot is the full stop
    ("Un bureau de 1 500 p.c. et un garage.", "Un bureau de mille cinq cents pieds carrés et un garage."),
    ("Un placard de 1 pi².", "Un placard de un pied carré."),
    ("Un local à 25 $/pi².", "Un local à vingt-cinq dollars le pied carré."),
    ("Un commerce loué 28 $/pi² par année.", "Un commerce loué vingt-huit dollars le pied carré par année."),
    ("Loué 15 $/p.c. par année.", "Loué quinze dollars le pied carré par année."),
    (
        "Le terrain fait 6 000 pi², soit 557 m².",
        "Le terrain fait six mille pieds carrés, soit cinq cent cinquante-sept mètres carrés.",
    ),
    ("Un appartement de 75 m².", "Un appartement de soixante-quinze mètres carrés."),
    ("Un terrain de 50 x 100 pi.", "Un terrain de cinquante par cent pieds."),
    ("Une chambre de 10 pi x 12 pi.", "Une chambre de dix pieds par douze pieds."),
    ("Un plafond de 9 pi et une porte de 36 po.", "Un plafond de neuf pieds et une porte de trente-six pouces."),
    # phones: area code and exchange digit by digit, the last four in two pairs
    ("Appelez-moi au 514 555-1234.", "Appelez-moi au cinq un quatre, cinq cinq cinq, douze trente-quatre."),
    ("Mon numéro : (514) 555-1234.", "Mon numéro : cinq un quatre, cinq cinq cinq, douze trente-quatre."),
    ("Le bureau : 514-555-1234.", "Le bureau : cinq un quatre, cinq cinq cinq, douze trente-quatre."),
    ("Sans frais : 1 800 555-1234.", "Sans frais : un huit cents, cinq cinq cinq, douze trente-quatre."),
    ("Sans frais : 1-800-555-1234.", "Sans frais : un huit cents, cinq cinq cinq, douze trente-quatre."),
    ("Ligne directe : 450.555.0102.", "Ligne directe : quatre cinq zéro, cinq cinq cinq, zéro un zéro deux."),
    ("Cellulaire : 4185550000.", "Cellulaire : quatre un huit, cinq cinq cinq, zéro zéro zéro zéro."),
    (
        "Depuis l'étranger : +1 819 555 4321.",
        "Depuis l'étranger : plus un huit un neuf, cinq cinq cinq, quarante-trois vingt et un.",
    ),
    (
        "Au bureau, 514 555-1234, poste 123.",
        "Au bureau, cinq un quatre, cinq cinq cinq, douze trente-quatre, poste un deux trois.",
    ),
    (
        "Le 1 888 555-0199, poste 2201.",
        "Le un huit huit huit, cinq cinq cinq, zéro un quatre-vingt-dix-neuf, poste vingt-deux zéro un.",
    ),
    ("Tél. : 819 555-4321.", "Téléphone : huit un neuf, cinq cinq cinq, quarante-trois vingt et un."),
    # postal codes and provinces
    ("Code postal : H2K 1E1.", "Code postal : H deux K, un E un."),
    ("À Québec, G1R 4P5.", "À Québec, G un R, quatre P cinq."),
    ("Laval (Québec) H7N 3X9.", "Laval, Québec H sept N, trois X neuf."),
    ("Gatineau (QC) J8X 2B4.", "Gatineau, Québec J huit X, deux B quatre."),
    ("Ottawa (Ontario) K1P 1J1.", "Ottawa, Ontario K un P, un J un."),
    ("Montréal, QC H3B 2Y5.", "Montréal, Québec H trois B, deux Y cinq."),
    ("Une propriété à Montréal (Québec).", "Une propriété à Montréal, Québec."),
    # OACIQ forms and acronyms spelled, only from the known list
    ("La PA et la CP sont signées.", "La P A et la C P sont signées."),
    ("Le vendeur remplit la DV et la DIA.", "Le vendeur remplit la D V et la D I A."),
    ("Le formulaire MO modifie la PA.", "Le formulaire M O modifie la P A."),
    ("Le CCVE est signé pour six mois.", "Le C C V E est signé pour six mois."),
    ("Le CCA protège l'acheteur.", "Le C C A protège l'acheteur."),
    ("L'OACIQ encadre les courtiers.", "L'O A C I Q encadre les courtiers."),
    ("La SCHL assure les prêts hypothécaires.", "La S C H L assure les prêts hypothécaires."),
    ("Le prix exclut la TPS et la TVQ.", "Le prix exclut la T P S et la T V Q."),
    ("TPS/TVQ en sus.", "T P S et T V Q en sus."),
    ("Un REER et un CELI, URGENT.", "Un REER et un CELI, URGENT."),  # not in the list: left as words
    ("La taxe de bienvenue est payable à l'achat.", "La taxe de bienvenue est payable à l'achat."),
    ("La fiche Centris est en ligne.", "La fiche Centris est en ligne."),
    (
        "Voir la fiche Centris no 12345678.",
        "Voir la fiche Centris numéro un deux trois quatre cinq six sept huit.",
    ),
    # addresses
    ("Au 4520, boul. Saint-Laurent.", "Au quatre mille cinq cent vingt, boulevard Saint-Laurent."),
    ("Au 3421, av. du Parc.", "Au trois mille quatre cent vingt et un, avenue du Parc."),
    ("Au 1200, ch. de la Côte-des-Neiges.", "Au mille deux cents, chemin de la Côte-des-Neiges."),
    ("Au 5800, rue St-Denis.", "Au cinq mille huit cents, rue Saint-Denis."),
    ("À Ste-Foy, près de St-Jérôme.", "À Sainte-Foy, près de Saint-Jérôme."),
    ("L'app. no 4 est libre.", "L'appartement numéro quatre est libre."),
    ("L'app. 4B est libre.", "L'appartement quatre B est libre."),
    ("Au 2643A Sherbrooke Est.", "Au deux mille six cent quarante-trois A Sherbrooke Est."),
    (
        "Le 2643 Sherbrooke Est compte 12 logements.",
        "Le deux mille six cent quarante-trois Sherbrooke Est compte douze logements.",
    ),
    # rooms and floors
    ("Un condo avec s.-sol et 3 ch. à coucher.", "Un condo avec sous-sol et trois chambres à coucher."),
    ("Une ch. à coucher au RDC.", "Une chambre à coucher au rez-de-chaussée."),
    ("Un 4 ½ à louer.", "Un quatre et demie à louer."),
    ("Un 5 1/2 au 2e étage.", "Un cinq et demie au deuxième étage."),
    ("Un 3½ meublé.", "Un trois et demie meublé."),
    # dates
    ("Le 1er juillet, c'est le jour du déménagement.", "Le premier juillet, c'est le jour du déménagement."),
    ("Occupation le 2025-07-01.", "Occupation le premier juillet deux mille vingt-cinq."),
    ("Signature chez le notaire le 2025-08-15.", "Signature chez le notaire le quinze août deux mille vingt-cinq."),
    (
        "Inspection le 15/08/2025 à 13 h 45.",
        "Inspection le quinze août deux mille vingt-cinq à treize heures quarante-cinq.",
    ),
    # times
    ("Visite à 14 h 30.", "Visite à quatorze heures trente."),
    ("Visite à 14 h.", "Visite à quatorze heures."),
    ("Visite à 14h30.", "Visite à quatorze heures trente."),
    ("Portes ouvertes de 9 h à 17 h.", "Portes ouvertes de neuf heures à dix-sept heures."),
    ("Rendez-vous à 9 h 05.", "Rendez-vous à neuf heures cinq."),
    ("Ouvert à 1 h.", "Ouvert à une heure."),
    ("Joignable 7j/7.", "Joignable sept jours sur sept."),
    # percentages and mortgages
    ("Un taux de 4,79 %.", "Un taux de quatre virgule soixante-dix-neuf pour cent."),
    ("Une commission de 5 %.", "Une commission de cinq pour cent."),
    (
        "Une mise de fonds de 20 %, soit 110 000 $.",
        "Une mise de fonds de vingt pour cent, soit cent dix mille dollars.",
    ),
    (
        "Un prêt de 440 000 $ à 4,79 % sur 25 ans.",
        "Un prêt de quatre cent quarante mille dollars à quatre virgule soixante-dix-neuf pour cent sur vingt-cinq ans.",
    ),
    # titles, shared with fr-FR
    ("M. Tremblay et Mme Gagnon signent la PA.", "Monsieur Tremblay et Madame Gagnon signent la P A."),
    ("Me Bouchard, notaire, reçoit l'acte.", "Maître Bouchard, notaire, reçoit l'acte."),
    ("Visite & signature.", "Visite et signature."),
    # Markdown and emoji
    ("**Prix** : *550 000 $* 🏠", "Prix : cinq cent cinquante mille dollars"),
    (
        "## Visite\n- 14 h 30\n- 2643 Sherbrooke Est",
        "Visite\nquatorze heures trente\ndeux mille six cent quarante-trois Sherbrooke Est",
    ),
]


@pytest.mark.parametrize(("written", "spoken"), CASES, ids=[c[0][:40] for c in CASES])
def test_normalize_for_speech_fr_ca(written: str, spoken: str) -> None:
    assert normalize_for_speech(written, "fr-CA") == spoken


def test_there_are_at_least_70_cases() -> None:
    assert len(CASES) >= 70


@pytest.mark.parametrize("written", [c[0] for c in CASES], ids=[c[0][:40] for c in CASES])
def test_spoken_text_holds_no_raw_digit_or_symbol(written: str) -> None:
    """espeak would read a leftover digit, "$" or "²" on its own (as English digits or a sign name)."""
    spoken = normalize_for_speech(written, "fr-CA")
    assert not re.search(r"[0-9$²]", spoken), spoken


def test_fr_ca_is_the_default_locale() -> None:
    assert normalize_for_speech("Un condo à 550 000 $.") == "Un condo à cinq cent cinquante mille dollars."


def test_the_same_text_reads_differently_per_locale() -> None:
    written = "Appelez le 514 555-1234 pour la PA."
    assert (
        normalize_for_speech(written, "fr-CA")
        == "Appelez le cinq un quatre, cinq cinq cinq, douze trente-quatre pour la P A."
    )
    assert "P A" not in normalize_for_speech(written, "fr-FR")  # the OACIQ codes are Québec's


@pytest.mark.parametrize("locale", ["fr-CA", "fr-FR"])
def test_both_locales_strip_markdown_and_emoji(locale: str) -> None:
    written = "## Étapes\n- **Visite** du `condo` 🏡\n- [Offre](https://exemple.ca) _signée_\n| Pièce | État |\n|---|---|\n| Cuisine | ~~neuve~~ |"
    assert normalize_for_speech(written, locale) == "Étapes\nVisite du condo\nOffre signée\nPièce, État\nCuisine, neuve"


@pytest.mark.parametrize("locale", ["en-US", "fr", "fr-ca", "fr_CA", ""])
def test_an_unknown_locale_is_refused(locale: str) -> None:
    with pytest.raises(ValueError, match="unknown speech locale"):
        normalize_for_speech("Bonjour", locale)
