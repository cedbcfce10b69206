import { main } from "../../mesh/service.js";
import { order } from "./order.js";

await main(order);
