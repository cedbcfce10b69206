import { main } from "../../mesh/service.js";
import { inventory } from "./inventory.js";

await main(inventory);
