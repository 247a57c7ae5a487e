"""The France (fr-FR) reading normaliser, table-driven: what Léa writes → what the voice reads."""

from __future__ import annotations

import pytest

from lea_local.tts.normalize import normalize_for_speech

CASES = [
    # numbers
    ("J'ai 3 biens.", "J'ai trois biens."),
    ("Il reste 21 lots.", "Il reste vingt et un lots."),
    ("Environ 80 visites.", "Environ quatre-vingts visites."),
    ("Plus de 1 500 contacts.", "Plus de mille cinq cents contacts."),
    ("Un taux de 3,5.", "Un taux de trois virgule cinq."),
    ("Coefficient 1,05.", "Coefficient un virgule zéro cinq."),
    ("En 2024 nous avons vendu 200 maisons.", "En deux mille vingt-quatre nous avons vendu deux cents maisons."),
    # money
    ("Prix : 350 000 €.", "Prix : trois cent cinquante mille euros."),
    ("Prix : 350\u202f000 €.", "Prix : trois cent cinquante mille euros."),
    ("Frais de 1 500,50 €.", "Frais de mille cinq cents euros cinquante."),
    ("Le loyer est de 850€.", "Le loyer est de huit cent cinquante euros."),
    ("Budget de 1 €.", "Budget de un euro."),
    ("Un bien à 1 000 000 €.", "Un bien à un million d'euros."),
    ("Un budget de 450 k€.", "Un budget de quatre cent cinquante mille euros."),
    ("Un programme de 1,2 M€.", "Un programme de un virgule deux million d'euros."),  # singular below 2
    ("Un programme de 2,5 M€.", "Un programme de deux virgule cinq millions d'euros."),
    ("Honoraires : 9 000 EUR.", "Honoraires : neuf mille euros."),
    ("Il coûte 300 000 euros.", "Il coûte trois cent mille euros."),
    ("Compter 4 500 €/m² à Lyon.", "Compter quatre mille cinq cents euros le mètre carré à Lyon."),
    ("Loyer de 900 €/mois.", "Loyer de neuf cents euros par mois."),
    # percentages
    ("Une commission de 5 %.", "Une commission de cinq pour cent."),
    ("Un taux de 3,5%.", "Un taux de trois virgule cinq pour cent."),
    ("Les prix ont reculé de -2 %.", "Les prix ont reculé de moins deux pour cent."),
    # surfaces
    ("Un appartement de 75 m².", "Un appartement de soixante-quinze mètres carrés."),
    ("Un studio de 25 m2.", "Un studio de vingt-cinq mètres carrés."),
    ("Une cave de 12,5m2.", "Une cave de douze virgule cinq mètres carrés."),
    ("Un placard de 1 m².", "Un placard de un mètre carré."),
    ("Une cuve de 3 m³.", "Une cuve de trois mètres cubes."),
    ("La gare est à 2 km.", "La gare est à deux kilomètres."),
    # apartment types
    ("Un T3 lumineux.", "Un T trois lumineux."),
    ("Un F2 ou un T4.", "Un F deux ou un T quatre."),
    # ordinals
    ("Au 1er étage.", "Au premier étage."),
    ("La 1re visite.", "La première visite."),
    ("Au 2e étage.", "Au deuxième étage."),
    ("Au 3ème étage.", "Au troisième étage."),
    ("Le 2nd rendez-vous.", "Le second rendez-vous."),
    ("Le 1er mars.", "Le premier mars."),
    # dates
    ("Signature le 12/03/2025.", "Signature le douze mars deux mille vingt-cinq."),
    ("Livraison le 01/04/24.", "Livraison le premier avril deux mille vingt-quatre."),
    ("Visite le 12/03 à 10h.", "Visite le douze mars à dix heures."),
    # times
    ("Visite à 14h30.", "Visite à quatorze heures trente."),
    ("Rendez-vous à 9h.", "Rendez-vous à neuf heures."),
    ("Ouverture à 1h.", "Ouverture à une heure."),
    ("Fermeture à 21h.", "Fermeture à vingt et une heures."),
    ("Appel à 18:45.", "Appel à dix-huit heures quarante-cinq."),
    ("Joignable 24h/24 et 7j/7.", "Joignable vingt-quatre heures sur vingt-quatre et sept jours sur sept."),
    # phone numbers
    ("Appelez le 06 12 34 56 78.", "Appelez le zéro six, douze, trente-quatre, cinquante-six, soixante-dix-huit."),
    ("Tél : 01.45.67.89.05", "Tél : zéro un, quarante-cinq, soixante-sept, quatre-vingt-neuf, zéro cinq"),
    ("Ou le 0612345678.", "Ou le zéro six, douze, trente-quatre, cinquante-six, soixante-dix-huit."),
    (
        "Depuis l'étranger : +33 6 12 34 56 78.",
        "Depuis l'étranger : plus trente-trois, six, douze, trente-quatre, cinquante-six, soixante-dix-huit.",
    ),
    # abbreviations
    ("M. Martin et Mme Durand.", "Monsieur Martin et Madame Durand."),
    ("Voir le lot n° 12.", "Voir le lot numéro douze."),
    ("Cuisine, séjour, etc.", "Cuisine, séjour, et cetera"),
    ("Appartement au RDC.", "Appartement au rez-de-chaussée."),
    ("Loyer 700 € HC.", "Loyer sept cents euros hors charges."),
    ("Me Dupont, notaire.", "Maître Dupont, notaire."),
    # markdown and emoji
    ("**Prix** : *négociable*", "Prix : négociable"),
    ("## Étapes\n- Estimation\n- Mandat", "Étapes\nEstimation\nMandat"),
    ("1. Visite\n2. Offre", "Visite\nOffre"),
    ("Voir [le site](https://exemple.fr) 😊", "Voir le site"),
    ("Bravo 🎉🏠 !", "Bravo !"),
    ("Un `code` ici", "Un code ici"),
    ("| Pièce | Surface |\n|---|---|\n| Séjour | 30 m² |", "Pièce, Surface\nSéjour, trente mètres carrés"),
]


@pytest.mark.parametrize(("written", "spoken"), CASES, ids=[c[0][:40] for c in CASES])
def test_normalize_for_speech(written: str, spoken: str) -> None:
    assert normalize_for_speech(written, "fr-FR") == spoken


def test_there_are_at_least_40_cases() -> None:
    assert len(CASES) >= 40
