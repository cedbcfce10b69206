// The demo catalog seeded on first start, so a newcomer sees products at once. Ids are fixed so
// the demo stock in inventory can refer to them.
import type { NewProduct } from "./store.js";

export interface DemoProduct extends Omit<NewProduct, "currency" | "imageUrl"> {
  /** Units inventory starts with. */
  stock: number;
}

const p = (n: number, sku: string, name: string, category: string, priceMinor: number, stock: number, description: string): DemoProduct => ({
  id: `0190a000-0000-7000-8000-${n.toString().padStart(12, "0")}`,
  sku,
  name,
  description,
  category,
  priceMinor: BigInt(priceMinor),
  stock,
});

export const demoProducts: readonly DemoProduct[] = [
  p(1, "MUG-001", "Enamel camping mug", "kitchen", 1450, 120, "A 350 ml enamel mug that survives campfires and dishwashers."),
  p(2, "KNF-002", "Chef's knife 20 cm", "kitchen", 8900, 25, "Forged stainless steel, full tang, balanced at the bolster."),
  p(3, "PAN-003", "Cast iron skillet 26 cm", "kitchen", 5400, 40, "Pre-seasoned cast iron for searing, baking and everything between."),
  p(4, "TEE-004", "Organic cotton t-shirt", "apparel", 2500, 300, "Heavyweight organic cotton, garment dyed."),
  p(5, "HOO-005", "Merino hoodie", "apparel", 11900, 30, "Soft merino wool hoodie that regulates temperature on the trail."),
  p(6, "SOC-006", "Hiking socks (3 pairs)", "apparel", 1990, 200, "Cushioned wool blend socks for long days on foot."),
  p(7, "LMP-007", "Desk lamp", "home", 6400, 15, "Dimmable LED desk lamp with a warm 2700 K light."),
  p(8, "PLT-008", "Ceramic plant pot", "home", 2200, 60, "Hand-glazed stoneware pot with a drainage hole and saucer."),
  p(9, "BLK-009", "Wool blanket", "home", 9800, 10, "A large blanket woven from undyed wool."),
  p(10, "BTL-010", "Insulated bottle 750 ml", "outdoor", 3200, 150, "Keeps drinks cold for 24 hours or hot for 12."),
  p(11, "TNT-011", "Two-person tent", "outdoor", 24900, 8, "Freestanding three-season tent, 1.9 kg packed."),
  p(12, "HLP-012", "Headlamp", "outdoor", 2900, 80, "350 lumen rechargeable headlamp with a red night mode."),
];

export const DEMO_CURRENCY = "EUR";
