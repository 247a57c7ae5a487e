// Léa's documents (the knowledge base's admin API): upload, list, delete, search, and the
// agency's own vocabulary (its thesaurus rules).

import { ApiProblem, callApi } from "./api.js";

const DOCUMENTS = "/api/knowledge/documents";
const THESAURUS = "/api/knowledge/thesaurus";

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

export class DocumentsPanel {
  constructor(showProblem) {
    this.showProblem = showProblem;
    this.state = document.getElementById("documents-state");
    this.rows = document.getElementById("documents");
    this.results = document.getElementById("document-results");
    this.file = document.getElementById("document-file");
    document.getElementById("upload-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.upload();
    });
    document.getElementById("search-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.search(document.getElementById("document-query").value);
    });
    this.thesaurus = document.getElementById("thesaurus-text");
    this.thesaurusState = document.getElementById("thesaurus-state");
    document.getElementById("thesaurus-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.saveThesaurus();
    });
  }

  async guarded(work, { listing = false } = {}) {
    try {
      await work();
    } catch (error) {
      if (listing && error instanceof ApiProblem && error.status === 404) {
        // The list's route itself is missing: a server without the knowledge base.
        this.state.textContent = "Ce serveur n'a pas de base de connaissances.";
        return;
      }
      this.showProblem(error);
    }
  }

  refresh() {
    return this.guarded(async () => {
      const { documents } = await callApi(DOCUMENTS);
      this.rows.replaceChildren(...documents.map((doc) => this.row(doc)));
      this.state.textContent = documents.length
        ? `${documents.length} document(s) indexé(s).`
        : "Aucun document : Léa répond sans sources.";
      this.showThesaurus(await callApi(THESAURUS));
    }, { listing: true });
  }

  showThesaurus({ text, rules, lines_without_rule: without }) {
    this.thesaurus.value = text;
    const counted = rules ? `${rules} règle(s) de l'agence.` : "Aucune règle de l'agence.";
    const unread = without.length ? ` Lignes sans règle : ${without.join(", ")}.` : "";
    this.thesaurusState.textContent = counted + unread;
  }

  saveThesaurus() {
    return this.guarded(async () => {
      const saved = await callApi(THESAURUS, { method: "PUT", body: { text: this.thesaurus.value } });
      this.showThesaurus(saved);
    });
  }

  row(doc) {
    const tr = document.createElement("tr");
    tr.dataset.documentId = String(doc.id);
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "Supprimer";
    remove.dataset.testid = "document-delete";
    remove.setAttribute("aria-label", `Supprimer ${doc.file_name}`);
    remove.addEventListener("click", () => this.remove(doc));
    const action = document.createElement("td");
    action.append(remove);
    tr.append(cell(doc.title), cell(doc.file_name), cell(String(doc.passages)), action);
    return tr;
  }

  upload() {
    const file = this.file.files[0];
    if (!file) {
      this.state.textContent = "Choisissez d'abord un fichier.";
      return Promise.resolve();
    }
    return this.guarded(async () => {
      const form = new FormData();
      form.append("file", file, file.name);
      const { document: added } = await callApi(DOCUMENTS, { method: "POST", body: form });
      this.file.value = "";
      await this.refresh();
      this.state.textContent = `« ${added.title} » ajouté : ${added.passages} passage(s).`;
    });
  }

  remove(doc) {
    return this.guarded(async () => {
      await callApi(`${DOCUMENTS}/${doc.id}`, { method: "DELETE" });
      await this.refresh();
      this.state.textContent = `« ${doc.title} » supprimé.`;
    });
  }

  search(query) {
    if (!query.trim()) {
      this.results.replaceChildren();
      return Promise.resolve();
    }
    return this.guarded(async () => {
      const { passages } = await callApi(`/api/knowledge/search?q=${encodeURIComponent(query)}&limit=5`);
      this.results.replaceChildren(
        ...passages.map((passage) => {
          const li = document.createElement("li");
          const where = document.createElement("strong");
          where.textContent = [passage.title, passage.section].filter(Boolean).join(" — ");
          const text = document.createElement("p");
          text.textContent = passage.text;
          li.append(where, text);
          return li;
        }),
      );
      if (!passages.length) this.state.textContent = "Aucun passage ne correspond.";
    });
  }
}
