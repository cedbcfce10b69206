import { main } from "../../mesh/service.js";
import { payment } from "./payment.js";

await main(payment);
