// The object the "Publish" button sends: the shape that never arrives when
// socket.io-client runs inside an API route (more than a couple of properties,
// nested objects and arrays, non-ASCII text and a string of a few hundred KB).

const NOTE_UNIT = "Ligne de journal — ünïcödé ✓ 東京 🚚; ";

/** At least `chars` UTF-16 code units, made of whole units (never half an emoji). */
function longNote(chars: number): string {
  return NOTE_UNIT.repeat(Math.ceil(chars / NOTE_UNIT.length));
}

export type SamplePayload = ReturnType<typeof samplePayload>;

export function samplePayload(id: string) {
  return {
    id,
    kind: "order.updated",
    sentAt: new Date().toISOString(),
    customer: {
      id: 4217,
      name: "Zoë Ångström-Nakamura",
      email: "zoe@example.com",
      address: {
        street: "Bahnhofstrasse 1",
        city: "Zürich",
        postcode: "8001",
        country: "CH",
        geo: { lat: 47.3769, lng: 8.5417 },
      },
      tags: ["vip", "beta", "früh"],
    },
    items: [
      {
        sku: "CAF-001",
        title: "Café crème ☕",
        quantity: 2,
        unitPrice: 4.5,
        options: { size: "L", extras: ["oat milk", "cinnamon"] },
      },
      {
        sku: "CRO-042",
        title: "Croissant 🥐",
        quantity: 1,
        unitPrice: 3.25,
        options: { size: null, extras: [] },
      },
      {
        sku: "MOC-777",
        title: "抹茶ラテ (matcha latte)",
        quantity: 3,
        unitPrice: 5.75,
        options: { size: "M", extras: ["honey"] },
      },
    ],
    totals: { subtotal: 29.5, tax: 2.27, currency: "CHF", discounts: [] as string[] },
    flags: { paid: true, shipped: false, giftWrap: null },
    text: {
      japanese: "こんにちは世界",
      arabic: "مرحبا بالعالم",
      russian: "Привет, мир",
      emoji: "🚀🎉👩‍💻🏳️‍🌈",
      math: "∑ ∞ ≠ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
      escapes: 'quote " backslash \\ tab \t newline \n end',
    },
    matrix: [
      [1, 2, 3],
      [4, 5, 6],
      [7, 8, 9],
    ],
    numbers: { zero: 0, negative: -42, fraction: 3.14159, maxSafe: 9007199254740991, tiny: 1e-7 },
    empty: { object: {}, array: [] as number[], string: "" },
    note: longNote(256 * 1024),
  };
}
