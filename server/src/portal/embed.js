// credyt billing portal, embeddable: <script src="https://billing.example.com/portal/embed.js"></script>
// then <credyt-portal src="{redirect_url from POST /billing-portal/sessions}"></credyt-portal>.
// The element holds the portal in an iframe sized to its container (height attribute
// optional, 720px by default).
class CredytPortal extends HTMLElement {
  static get observedAttributes() { return ["src", "height"]; }
  connectedCallback() { this.render(); }
  attributeChangedCallback() { if (this.isConnected) this.render(); }
  render() {
    let frame = this.querySelector("iframe");
    if (!frame) {
      frame = document.createElement("iframe");
      frame.title = this.getAttribute("title") || "Billing";
      frame.style.border = "0";
      frame.style.width = "100%";
      frame.setAttribute("allow", "payment");
      this.appendChild(frame);
    }
    frame.style.height = (this.getAttribute("height") || "720") + "px";
    const src = this.getAttribute("src");
    if (src && frame.getAttribute("src") !== src) frame.setAttribute("src", src);
  }
}
if (!customElements.get("credyt-portal")) customElements.define("credyt-portal", CredytPortal);
