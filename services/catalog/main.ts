import { main } from "../../mesh/service.js";
import { catalog } from "./catalog.js";

await main(catalog);
