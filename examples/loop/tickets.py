"""The task of the loop: route a customer-support ticket to one queue, answering with its name only.

    split = split_tickets(60, 300, heldout_templates=2)  # held-out and traffic tickets, disjoint
    ticket = split.heldout[0]        # Ticket(text="Hi team, how do I pay by bank transfer ...", queue="billing")
    messages(ticket.text)            # the chat a model is sent: the system prompt and the ticket
    is_correct("Billing ", "billing")  # True: exact match after strip and lowercase

Tickets are written from templates (ten per queue, each with its own wording) whose slots are
filled with products, order numbers, amounts, error messages, devices, names and so on, wrapped in
an optional greeting and sign-off. Every draw comes from a `random.Random` seeded by the caller, so
a seed gives the same tickets in the same order on every machine. The held-out tickets (the eval
suite) and the traffic tickets (simulated production, later the training data) are disjoint by
text, and with `heldout_templates` also by wording: some templates write held-out tickets only.

The grader is deliberately plain: an answer is right when, stripped of surrounding whitespace and
lowercased, it equals the queue's name. "Billing" passes; "billing." and "The queue is billing" do
not, because the caller routes on the string it gets back.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

# Queue -> what belongs in it. The templates below follow these lines; the prompt names the queues only.
QUEUES: dict[str, str] = {
    "billing": "invoices, charges, payment methods, subscription fees",
    "technical": "bugs, errors, crashes, the app or website not working",
    "account": "logging in, passwords, two-factor codes, profile and account settings",
    "shipping": "delivery status, tracking, delays, delivery address",
    "returns": "returning or exchanging an item, refunds for returned items",
    "sales": "buying, prices and quotes, demos, bulk or business orders",
}

# Short on purpose: every request and every training row carries it, and on two CPU cores training
# time grows with the tokens per row.
SYSTEM_PROMPT = (f"Route the support ticket to one queue: {', '.join(QUEUES)}. "
                 "Reply with the queue name only.")

_SLOTS: dict[str, list[str]] = {
    "product": ["wireless headphones", "standing desk", "coffee grinder", "running shoes", "phone case",
                "air purifier", "backpack", "smart watch", "blender", "office chair", "yoga mat",
                "desk lamp", "rain jacket", "bluetooth speaker", "electric kettle", "monitor stand"],
    "plan": ["Pro plan", "Team plan", "Basic plan", "Premium subscription", "annual plan", "monthly plan"],
    "order": [f"#{n}" for n in (48213, 50917, 33871, 61402, 72055, 19388, 88146, 40521, 95730, 27664,
                                 31009, 56478, 64290, 70813, 82357, 13596)],
    "amount": ["$12.99", "$49.00", "$129.50", "$8.75", "$240.00", "$19.99", "€35.00", "£60.00", "$89.90"],
    "days": ["three", "five", "ten", "two", "seven", "twelve"],
    "error": ["error 500", "error code E42", "a 403 Forbidden page", "\"Something went wrong\"",
              "error 0x80070005", "a blank white screen", "\"Unable to connect\"", "a timeout error"],
    "device": ["iPhone", "Android phone", "Windows laptop", "MacBook", "iPad", "Chromebook", "Pixel tablet"],
    "browser": ["Chrome", "Firefox", "Safari", "Edge"],
    "feature": ["the export button", "search", "the dashboard", "notifications", "file upload",
                "the calendar sync", "checkout", "the mobile app"],
    "carrier": ["UPS", "FedEx", "DHL", "USPS", "the courier"],
    "city": ["Denver", "Leeds", "Toronto", "Austin", "Lyon", "Melbourne", "Porto", "Osaka"],
    "qty": ["50", "200", "25", "120", "500", "80"],
    "company": ["Acme Corp", "Northwind", "Bluebird Studio", "Kestrel Labs", "Greenfield School",
                "Harbor Clinic", "Pinecone Media"],
    "size": ["medium", "large", "small", "size 9", "size 42", "XL"],
    "when": ["yesterday", "this morning", "last week", "on Monday", "two days ago", "after the update"],
}

_TEMPLATES: dict[str, list[str]] = {
    "billing": [
        "I was charged twice for my {plan} this month. Please fix the duplicate charge of {amount}.",
        "My card keeps getting declined when I try to pay the invoice for the {plan}.",
        "Can you send me a copy of the invoice for {amount}? Our accountant needs it with the VAT number.",
        "Why did my {plan} renew at {amount}? I thought the price was lower.",
        "I need to update the credit card on file, the old one expired {when}.",
        "There is a charge of {amount} on my statement that I don't recognise. What is it for?",
        "Please switch my {plan} to yearly billing and tell me the new amount.",
        "The invoice for order {order} shows the wrong company name, it should be {company}.",
        "I cancelled the {plan} but you still billed me {amount} {when}.",
        "How do I pay by bank transfer instead of card for the {plan}?",
    ],
    "technical": [
        "The app crashes every time I open {feature} on my {device}.",
        "I get {error} when I try to use {feature} in {browser}.",
        "{feature} stopped working {when}. Nothing happens when I click it.",
        "Your website shows {error} on my {device}, I already cleared the cache.",
        "Sync between my {device} and the web app is broken, changes don't show up.",
        "The page loads forever in {browser} and then shows {error}.",
        "After the latest update {feature} is extremely slow on my {device}.",
        "The API started returning {error} for every request {when}. Our integration is down.",
        "Notifications are not arriving on my {device} even though they are turned on.",
        "I keep seeing {error} when saving anything. Is the service having problems?",
    ],
    "account": [
        "I can't log in. The password reset email never arrives.",
        "I lost my phone and can't get the two-factor code. How do I get back into my account?",
        "Please change the email address on my account, I no longer use the old one.",
        "My account got locked after too many login attempts {when}.",
        "How do I delete my account and all my personal data?",
        "I want to change my username and update my profile picture.",
        "Someone else logged into my account {when}, I think it was hacked. Please secure it.",
        "The verification code for my login is always rejected on my {device}.",
        "Can you merge my two accounts? I signed up twice with different emails.",
        "I forgot which email I used to sign up and now I can't sign in.",
    ],
    "shipping": [
        "Where is my order {order}? It said it would arrive {days} days ago.",
        "The tracking for order {order} stopped updating {when}.",
        "{carrier} says my {product} was delivered but nothing came to my door.",
        "Can I change the delivery address for order {order}? I moved to {city}.",
        "My package with the {product} is stuck in {city} according to {carrier}.",
        "Do you ship to {city}, and how long does delivery take?",
        "Order {order} still shows 'preparing to ship' after {days} days.",
        "Can you upgrade order {order} to express delivery? I need the {product} by Friday.",
        "I never received a tracking number for my {product}, order {order}.",
        "The delivery of my {product} is late and {carrier} is not answering.",
    ],
    "returns": [
        "I'd like to return the {product} from order {order}, it doesn't fit my needs.",
        "The {product} arrived broken. I want to send it back for a refund.",
        "Can I exchange the {product} for a {size} instead?",
        "I sent back the {product} {days} days ago, when will my refund arrive?",
        "How do I print a return label for order {order}?",
        "The {product} I received is the wrong color, I want to exchange it.",
        "Is it too late to return the {product}? I bought it {days} weeks ago.",
        "I returned order {order} but the refund was only part of the price.",
        "Please send me a replacement {product}, the one I got stopped working after {days} days.",
        "What is your return policy for a {product} that was opened but not used?",
    ],
    "sales": [
        "We want to buy {qty} units of the {product} for {company}. Can you send a quote?",
        "Do you offer a discount for nonprofits? We are {company} and need {qty} licenses.",
        "Can I book a demo of the {plan} for my team at {company}?",
        "What is the price difference between the {plan} and the Enterprise plan?",
        "I'm interested in the {product}. Is there a bundle deal if I buy two?",
        "We are a school in {city} looking to order {qty} seats. Who should I talk to?",
        "Do you have volume pricing for orders over {qty} units?",
        "Our company {company} wants to resell your {product}. Do you have a partner program?",
        "Is the {product} coming back in stock? I want to buy one as soon as possible.",
        "Could someone call me about upgrading {company} to a custom contract?",
    ],
}

_GREETINGS = ["", "", "Hi, ", "Hello, ", "Hey there, ", "Good morning, ", "Hi team, ", "URGENT: "]
_SIGN_OFFS = ["", "", "", " Thanks.", " Thank you!", " Thanks, {name}", " Regards, {name}", " - {name}",
              " Please help asap."]
_NAMES = ["Maria", "Tom", "Aisha", "Kenji", "Lucas", "Priya", "Sam", "Elena", "Omar", "Grace", "Jonas", "Mei"]

# Draws in a row that repeat an earlier ticket before generation gives up: the templates are used up.
_MAX_MISSES = 1_000


@dataclass(frozen=True)
class Ticket:
    """One support ticket, the queue it belongs in, and which of the queue's templates wrote it."""

    text: str
    queue: str
    template: int


@dataclass(frozen=True)
class Split:
    """Tickets for the eval suite and for simulated production traffic; no text is in both."""

    heldout: list[Ticket]
    traffic: list[Ticket]


def _fill(template: str, rng: random.Random) -> str:
    values = {slot: rng.choice(options) for slot, options in _SLOTS.items() if "{" + slot + "}" in template}
    text = template.format(**values)
    return text[0].upper() + text[1:]


def _write_ticket(template: str, rng: random.Random) -> str:
    body = _fill(template, rng)
    greeting = rng.choice(_GREETINGS)
    # "Hi, the app crashes ..." reads naturally; names ("FedEx ...") and "I" keep their capital.
    if greeting.endswith(", ") and not template.startswith(("{", "I ", "I'")):
        body = body[0].lower() + body[1:]
    sign_off = rng.choice(_SIGN_OFFS).format(name=rng.choice(_NAMES))
    return f"{greeting}{body}{sign_off}"


def generate_tickets(count: int, *, seed: int, templates: dict[str, list[int]] | None = None) -> list[Ticket]:
    """`count` distinct tickets, the queues taking turns, shuffled; the same list for the same arguments.

    `templates` limits each queue to some of its templates (by index); default: all of them.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    rng = random.Random(seed)
    allowed = templates or {queue: list(range(len(_TEMPLATES[queue]))) for queue in QUEUES}
    queues = list(QUEUES)
    tickets: list[Ticket] = []
    seen: set[str] = set()
    misses = 0
    while len(tickets) < count:
        queue = queues[len(tickets) % len(queues)]
        template = rng.choice(allowed[queue])
        text = _write_ticket(_TEMPLATES[queue][template], rng)
        if text in seen:
            misses += 1
            if misses > _MAX_MISSES:
                raise ValueError(f"cannot write {count} distinct tickets from the templates ({len(tickets)} "
                                 f"written, then {_MAX_MISSES} repeats in a row); ask for fewer")
            continue
        misses = 0
        seen.add(text)
        tickets.append(Ticket(text=text, queue=queue, template=template))
    rng.shuffle(tickets)
    return tickets


def split_tickets(num_heldout: int, num_traffic: int, *, seed: int = 7, heldout_templates: int = 0) -> Split:
    """Held-out and traffic tickets, disjoint by text.

    With `heldout_templates` = k, the last k templates of every queue write only held-out tickets,
    so the eval also asks about wordings the traffic never showed.
    """
    fewest = min(len(t) for t in _TEMPLATES.values())
    if not 0 <= heldout_templates < fewest:
        raise ValueError(f"heldout_templates must be in [0, {fewest - 1}] (each queue has {fewest} templates), "
                         f"got {heldout_templates}")
    if heldout_templates:
        traffic_only = {q: list(range(len(t) - heldout_templates)) for q, t in _TEMPLATES.items()}
        heldout_only = {q: list(range(len(t) - heldout_templates, len(t))) for q, t in _TEMPLATES.items()}
        return Split(heldout=generate_tickets(num_heldout, seed=seed, templates=heldout_only),
                     traffic=generate_tickets(num_traffic, seed=seed + 1, templates=traffic_only))
    pool = generate_tickets(num_heldout + num_traffic, seed=seed)
    return Split(heldout=pool[:num_heldout], traffic=pool[num_heldout:])


def messages(ticket_text: str) -> list[dict[str, str]]:
    """The chat a model is sent for one ticket."""
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": ticket_text}]


def normalise(answer: str) -> str:
    """An answer as the grader compares it: surrounding whitespace stripped, lowercased."""
    return answer.strip().lower()


def is_correct(answer: str | None, queue: str) -> bool:
    """Exact match after strip and lowercase: the grader of the eval suite and of the simulated reviewers."""
    return answer is not None and normalise(answer) == queue


def eval_items(tickets: list[Ticket]) -> list[dict[str, Any]]:
    """The eval suite's items: the chat to send and the ideal answer."""
    return [{"messages": messages(t.text), "ideal": t.queue} for t in tickets]


# The suite's grader: slipway's exact-match grader, case-insensitive, surrounding whitespace ignored.
EXACT_GRADER: dict[str, Any] = {"type": "exact", "ignore_case": True, "collapse_whitespace": True}
