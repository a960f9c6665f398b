// Collector admin: small progressive enhancements; every page works without this script.

/**
 * Submit the participant search shortly after typing stops, so the table follows the query.
 * @param {HTMLFormElement} form the search form (GET /admin/participants)
 */
function searchAsYouType(form) {
  const input = form.querySelector('input[name="q"]');
  if (!input) return;
  let timer;
  input.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(() => form.requestSubmit(), 400);
  });
}

const search = document.getElementById('search');
if (search) searchAsYouType(search);
