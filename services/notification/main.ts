import { main } from "../../mesh/service.js";
import { notification } from "./notification.js";

await main(notification);
