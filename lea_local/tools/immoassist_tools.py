"""ImmoAssist's newest Léa's tools (docs/contract/immoassist-next.md, `lea_api/`), as it sends
them to `chat.completions.create(tools=…)`: for the tests, the tool-call evaluation
(scripts/eval_tool_calls.py) and the benchmark (`lea-local bench --tool-calls`)."""

from __future__ import annotations

from typing import Any

_STRINGS = {"type": "array", "items": {"type": "string"}}
_TRANSACTION_TYPE = {"type": "string", "enum": ["vente", "achat"]}

GEOCODE_ADDRESS: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "geocode_address",
        "description": "Trouve l'adresse complète d'une propriété dès que le courtier donne un numéro civique "
        "et une rue.",
        "parameters": {
            "type": "object",
            "properties": {
                "partial_address": {
                    "type": "string",
                    "description": "L'adresse telle que dite, ex. 5554 rue Saint-Denis",
                }
            },
            "required": ["partial_address"],
        },
    },
}

UPDATE_DRAFT: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "update_draft",
        "description": "Enregistre dans le brouillon chaque champ que le courtier donne. Appeler à chaque message qui "
        "apporte un champ.",
        "parameters": {
            "type": "object",
            "properties": {
                "transaction_fields": {
                    "type": "object",
                    "properties": {
                        "sellers": {**_STRINGS, "description": "Noms des vendeurs"},
                        "buyers": {**_STRINGS, "description": "Noms des acheteurs"},
                        "offered_price": {"type": "number", "description": "Prix offert en dollars"},
                        "transaction_type": _TRANSACTION_TYPE,
                    },
                },
                "pa_fields": {"type": "object", "description": "Champs de la promesse d'achat"},
            },
        },
    },
}

CREATE_TRANSACTION: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "create_transaction",
        "description": "Crée la transaction, seulement une fois que le courtier a confirmé.",
        "parameters": {
            "type": "object",
            "properties": {
                "property_address": {"type": "string"},
                "sellers": _STRINGS,
                "buyers": _STRINGS,
                "offered_price": {"type": "number"},
                "transaction_type": _TRANSACTION_TYPE,
            },
            "required": ["property_address", "sellers", "buyers", "offered_price", "transaction_type"],
        },
    },
}

_PA_PROPERTIES: dict[str, Any] = {
    "buyer_address": {"type": "string", "description": "Adresse de l'acheteur"},
    "buyer_phone": {"type": "string", "description": "Téléphone de l'acheteur"},
    "buyer_email": {"type": "string", "description": "Courriel de l'acheteur"},
    "seller_address": {"type": "string", "description": "Adresse du vendeur"},
    "seller_phone": {"type": "string", "description": "Téléphone du vendeur"},
    "seller_email": {"type": "string", "description": "Courriel du vendeur"},
    "property_address": {"type": "string", "description": "Adresse de l'immeuble"},
    "property_description": {"type": "string", "description": "Description de l'immeuble"},
    "purchase_price": {"type": "number", "description": "Prix d'achat en dollars"},
    "deposit_amount": {"type": "number", "description": "Acompte en dollars"},
    "deposit_date": {"type": "string", "description": "Date de l'acompte (AAAA-MM-JJ)"},
    "financing_amount": {"type": "number", "description": "Montant du prêt hypothécaire"},
    "financing_delay_days": {"type": "integer", "description": "Délai pour obtenir le financement, en jours"},
    "deed_date": {"type": "string", "description": "Date de signature de l'acte de vente (AAAA-MM-JJ)"},
    "occupancy_date": {"type": "string", "description": "Date d'occupation (AAAA-MM-JJ)"},
    "condition_inspection": {"type": "boolean", "description": "Conditionnelle à une inspection"},
    "condition_documents": {"type": "boolean", "description": "Conditionnelle à l'examen des documents"},
    "inclusions": {**_STRINGS, "description": "Biens inclus"},
    "exclusions": {**_STRINGS, "description": "Biens exclus"},
    "other_conditions": {"type": "string", "description": "Autres conditions"},
    "acceptance_delay": {"type": "string", "description": "Délai d'acceptance, ex. 2026-03-20 17:00"},
}
_PA_OPTIONAL = {"exclusions", "other_conditions", "occupancy_date"}

CREATE_PA: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "create_pa",
        "description": "Crée la promesse d'achat (formulaire OACIQ PA), seulement une fois que le courtier a confirmé.",
        "parameters": {
            "type": "object",
            "properties": _PA_PROPERTIES,
            "required": [name for name in _PA_PROPERTIES if name not in _PA_OPTIONAL],
        },
    },
}

GET_DRAFT: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_draft",
        "description": "Relit le brouillon en cours.",
        "parameters": {"type": "object", "properties": {}},
    },
}

TOOLS: list[dict[str, Any]] = [GEOCODE_ADDRESS, UPDATE_DRAFT, CREATE_TRANSACTION, CREATE_PA]
"""The chat completions' tools, in ImmoAssist's order."""

SYSTEM_PROMPT = (
    "Tu es Léa, l'assistante des courtiers immobiliers au Québec. Réponds en 2 ou 3 phrases, sans listes, "
    "une question à la fois. Utilise les outils pour toutes tes actions. N'appelle jamais un outil create_* "
    "dans le même tour où tu demandes « Je confirme ? »."
)

PROMISE_TO_PURCHASE = (
    "Je confirme, crée la promesse d'achat. Acheteur : Paul Roy, 12 rue Laval, Montréal, 514-555-0101, "
    "paul.roy@example.com. Vendeuse : Marie Tremblay, 5554 rue Saint-Denis, Montréal, 514-555-0202, "
    "marie.tremblay@example.com. Immeuble : le 5554 rue Saint-Denis, un condo de deux chambres. Prix : 550 000 $. "
    "Acompte de 10 000 $ le 2026-04-01. Financement de 440 000 $ en 10 jours. Acte de vente le 2026-06-30. "
    "Conditionnelle à l'inspection et à l'examen des documents. Inclusions : réfrigérateur, cuisinière. "
    "Délai d'acceptation : 2026-03-20 17:00."
)
"""A broker's whole promise to purchase in one message: every required field of `create_pa`."""
